"""What a person at a terminal and a program reading JSON get from every command.

Terminal output (a width or colour given) fits the width, puts the findings first and colours only
on request; without either it is the plain text scripts and the docs read, pinned here byte for
byte. Every command's JSON is one envelope, checked against the schema shipped for it.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace

import jsonschema
import pytest
from conftest import SAMPLES

import decay_audit
from decay_audit.classify import Classification
from decay_audit.findings import Outcome
from decay_audit.inventory import Inventory, VariableRecord
from decay_audit.kinds import Confidence, Kind, Preset
from decay_audit.policy import Decision, Policy
from decay_audit.report import OutputFormat, Show, Subject, render
from decay_audit.results import BatchItem, BatchReport, Measurement, ScannedVariable, ScanReport, VerifyReport
from decay_audit.schemas import load_schema
from decay_audit.stages.rules import check_rules, read_rule
from decay_audit.stages.scan import scan_inventory

ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def _visible(text: str) -> list[str]:
    return ESCAPE.sub("", text).splitlines()


def _variable(path, layer_class, shape, kind, decay, confidence=Confidence.HIGH, evidence="", reason=None):
    record = VariableRecord(path, path.rsplit("/", 1)[1], path.split("/")[0], layer_class, shape, "float32", True, "t")
    return ScannedVariable(
        record,
        Classification(kind, confidence, (evidence,) if evidence else ()),
        Decision(decay, reason or f"{kind.value} under kernels-only"),
    )


def _small_scan() -> ScanReport:
    """Three variables, one of each interesting sort, built without a loader or the classifier."""
    variables = (
        _variable("dense/kernel", "Dense", (3, 4), Kind.KERNEL, True, evidence="Keras class Dense: kernel"),
        _variable("dense/bias", "Dense", (4,), Kind.BIAS, False, evidence="Keras class Dense: bias"),
        _variable(
            "odd/var_0", None, (4, 4), Kind.KERNEL, False, Confidence.LOW, "shape [4, 4]", "override --no-decay odd/*"
        ),
    )
    return ScanReport(Inventory("small.keras", "keras-zip", tuple(v.record for v in variables)), variables, Policy())


SMALL_TABLE = """\
small.keras [keras-zip]

layer          variable      shape    kind    decay    conf    evidence
-------------  ------------  -------  ------  -------  ------  -------------------------
dense (Dense)  dense/kernel  (3, 4)   kernel  yes      high    Keras class Dense: kernel
               dense/bias    (4)      bias    no       high    Keras class Dense: bias
odd            odd/var_0     (4, 4)   kernel  no       low     shape [4, 4]

kind      variables    parameters    decayed
------  -----------  ------------  ---------
kernel            2            28          1
bias              1             4          0
total             3            32          1

decayed: 1 variables (12 parameters); excluded: 2 variables (20 parameters)
low confidence: 1; conflicting evidence: 0
"""

SMALL_FINDINGS = """\
small.keras [keras-zip]

variable    kind    decay    conf    finding
----------  ------  -------  ------  --------------------------------------------------------------------------
odd/var_0   kernel  no       low     low-confidence: judged kernel from shape [4, 4]; override --no-decay odd/*

kind      variables    parameters    decayed
------  -----------  ------------  ---------
kernel            2            28          1
bias              1             4          0
total             3            32          1

decayed: 1 variables (12 parameters); excluded: 2 variables (20 parameters)
low confidence: 1; conflicting evidence: 0
"""


def test_plain_table_is_the_same_text_as_before():
    """No width, no colour: what files, pipes and the docs get, byte for byte, by every entry point."""
    report = _small_scan()
    assert render(Subject.SCAN, OutputFormat.TABLE, report) == SMALL_TABLE
    assert OutputFormat.TABLE.render(report) == SMALL_TABLE
    assert render("scan", "table", report, model="small.keras") == SMALL_TABLE  # context is still accepted
    assert render("scan", "table", report, show="findings") == SMALL_FINDINGS


def _mobilenet_like() -> ScanReport:
    """262 variables shaped like MobileNetV2's: conv kernels, batch norms with their statistics."""
    records = []
    for block in range(52):
        conv, norm = f"block_{block}_expand", f"block_{block}_expand_BN"
        records.append(
            VariableRecord(f"{conv}/kernel", "kernel", conv, "Conv2D", (1, 1, 24, 144), "float32", True, "t")
        )
        for leaf, trainable in (("gamma", True), ("beta", True), ("moving_mean", False), ("moving_variance", False)):
            records.append(
                VariableRecord(f"{norm}/{leaf}", leaf, norm, "BatchNormalization", (144,), "float32", trainable, "t")
            )
    records.append(VariableRecord("predictions/kernel", "kernel", "predictions", "Dense", (1280, 1000), "f", True, "t"))
    records.append(VariableRecord("predictions/bias", "bias", "predictions", "Dense", (1000,), "f", True, "t"))
    return scan_inventory(Inventory("mobilenet_v2.keras", "keras-zip", tuple(records)))


@pytest.mark.parametrize("width", [60, 80, 100, 132])
def test_terminal_scan_fits_the_width_one_line_per_variable(width):
    report = _mobilenet_like()
    assert len(report.variables) == 262
    lines = _visible(render(Subject.SCAN, OutputFormat.TABLE, report, width=width))
    assert max(len(line) for line in lines) <= width
    listed = [line for line in lines if line.split(" ", 1)[0] in {v.record.path for v in report.variables}]
    assert len(listed) == 262  # every variable on a line of its own, none wrapped
    assert len(lines) < 262 + 25
    assert lines[0] == "mobilenet_v2.keras [keras-zip]"
    assert lines[-1] == "low confidence: 0; conflicting evidence: 0"


def test_findings_only_on_a_large_model_is_short():
    report = _mobilenet_like()
    for width in (None, 80):
        text = render(Subject.SCAN, OutputFormat.TABLE, report, show=Show.FINDINGS, width=width)
        assert len(text.splitlines()) < 20
        assert "no findings" in text and "block_3_expand/kernel" not in text


def test_terminal_scan_puts_findings_first_and_keeps_them_whole():
    report = scan_inventory(decay_audit.load(SAMPLES / "subclassed.keras"))
    low = [v.record.path for v in report.variables if v.classification.confidence is Confidence.LOW]
    assert len(low) == 4
    text = render(Subject.SCAN, OutputFormat.TABLE, report, width=80)
    lines = _visible(text)
    first_finding = next(i for i, line in enumerate(lines) if line.startswith(low[0]))
    listing = lines.index(next(line for line in lines if line == "all variables"))
    assert first_finding < listing  # findings before the full table
    assert "findings: 4 of 10 variables" in lines
    assert max(len(line) for line in lines) <= 80
    assert "1-D of width 8 beside" in " ".join(line.strip() for line in lines)  # wrapped, never cut
    only = _visible(render(Subject.SCAN, OutputFormat.TABLE, report, width=80, show=Show.FINDINGS))
    assert "all variables" not in only
    assert {line.split()[0] for line in only if line.startswith("my_model/")} == set(low)


def test_colour_only_when_asked():
    report = scan_inventory(decay_audit.load(SAMPLES / "subclassed.keras"))
    coloured = render(Subject.SCAN, OutputFormat.TABLE, report, width=100, color=True)
    assert "\x1b[32myes" in coloured  # decay yes: green
    assert "\x1b[1;33mlow" in coloured  # low confidence: bold yellow
    assert ESCAPE.sub("", coloured) == render(Subject.SCAN, OutputFormat.TABLE, report, width=100)
    unbounded = render(Subject.SCAN, OutputFormat.TABLE, report, color=True)  # --color always into a pager
    assert "\x1b[" in unbounded and "…" not in unbounded
    for show in Show:
        for width in (None, 40, 80, 200):
            for subject, value in (("scan", report), ("verify", _synthetic_verify(30)), ("check", _check())):
                assert "\x1b" not in render(subject, "table", value, show=show, width=width, color=False)


def test_hostile_names_stay_literal_on_a_terminal():
    """rich would read "[red]" as markup and print ESC from a name: neither may happen."""
    name = "evil[red]x[/red]\x1b[2J/kernel"
    variable = _variable(name, "Dense", (2, 2), Kind.KERNEL, True, evidence="e")
    report = ScanReport(Inventory("x.keras", "keras-zip", (variable.record,)), (variable,), Policy())
    for color in (False, True):
        text = render(Subject.SCAN, OutputFormat.TABLE, report, width=120, color=color)
        assert "evil[red]x[/red]\\x1b[2J/kernel" in text
        assert "\x1b[2J" not in text


def _synthetic_verify(count: int, hint: str | None = None) -> VerifyReport:
    """``count`` variables of every kind, some wrong, some not measured, one with coupled decay too:
    a report built from records, so the renderers are tested without TensorFlow."""
    kinds = [k for k in Kind if k is not Kind.STATISTIC]
    measurements = []
    for i in range(count):
        kind = kinds[i * 7 % len(kinds)]
        decays = kind is Kind.KERNEL
        wrong = i % 37 == 5
        measured = decays != wrong
        outcome = Outcome.OK if not wrong else Outcome.NOT_DECAYED if decays else Outcome.DECAYED_AGAINST_INTENT
        measurements.append(
            Measurement(
                path=f"block_{i // 4}/{kind.value}_{i}",
                expected_decay=decays,
                intent=f"{kind.value} under kernels-only" if decays else f"{kind.value} is excluded under kernels-only",
                steps=3,
                decoupled_steps=3 if measured else 0,
                coupled_steps=3 if i % 53 == 7 else 0,
                decoupled_ratio=(1.0 + (i % 5 - 2) / 50) if measured else None,
                coupled_relative=0.01 if i % 53 == 7 else 0.0,
                outcome=outcome,
                detail=f"{'expected no decay, measured decoupled' if outcome is not Outcome.OK else 'as intended'} "
                "by AdamW weight_decay=0.01, lr*wd = 0.0001 per step",
                hint=hint if wrong else None,
            )
        )
    return VerifyReport("train.py:make", "AdamW", 0.01, 3, "CPU", tuple(measurements))


HINT = "Keras matches var_names against 'path:0' on TensorFlow: exclude with var_list or a full path"


def test_verify_hint_follows_the_detail_in_every_format():
    report = _synthetic_verify(10, HINT)
    assert len(report.mismatches) == 1
    wrong = report.mismatches[0].path
    plain = render(Subject.VERIFY, OutputFormat.TABLE, report)
    row = next(line for line in plain.splitlines() if line.startswith(wrong))
    assert row.endswith(f"lr*wd = 0.0001 per step; hint: {HINT}")
    assert plain.count("hint:") == 1
    terminal = _visible(render(Subject.VERIFY, OutputFormat.TABLE, report, width=80))
    block = terminal[terminal.index(next(line for line in terminal if line.startswith(wrong + "  "))) :]
    assert block[1].startswith("    expected no decay (") and block[2].startswith("    expected no decay, measured")
    assert block[4].startswith("    hint: Keras matches var_names") and max(len(line) for line in terminal) <= 80
    assert terminal.index("all variables") > terminal.index(block[0])  # the wrong ones first
    rows = json.loads(render(Subject.VERIFY, OutputFormat.JSON, report))["result"]["variables"]
    assert [r["hint"] for r in rows if r["path"] == wrong] == [HINT]
    assert all(r["hint"] is None for r in rows if r["path"] != wrong)
    findings = render(Subject.VERIFY, OutputFormat.TABLE, report, show=Show.FINDINGS)
    assert [line.split()[0] for line in findings.splitlines() if line.startswith("block_")] == [wrong]
    assert findings.rstrip().endswith("1 of 10 variables get the wrong decay")


def _check():
    report = decay_audit.scan(SAMPLES / "zoo.keras")
    return check_rules(report, "keras", read_rule("keras", None, ("bias", "gamma", "nothing_here"), "tensorflow"))


def test_check_on_a_terminal_lists_findings_first():
    result = _check()
    lines = _visible(render(Subject.CHECK, OutputFormat.TABLE, result, width=80))
    assert max(len(line) for line in lines) <= 80
    assert lines.index(f"{len(result.findings)} finding(s)") < next(
        i for i, ln in enumerate(lines) if ln.startswith("pattern")
    )
    only = render(Subject.CHECK, OutputFormat.TABLE, result, show=Show.FINDINGS)
    assert (
        not any(line.startswith("pattern") for line in only.splitlines())
        and "dead-pattern" in only
        and f"{len(result.findings)} finding(s)" in only
    )


def _batch() -> BatchReport:
    items = [BatchItem(str(SAMPLES / n), decay_audit.scan(SAMPLES / n)) for n in ("seed.keras", "subclassed.keras")]
    items.append(BatchItem(str(SAMPLES / "broken.keras"), None, "broken.keras: not a model"))
    return BatchReport(tuple(items))


def test_batch_on_a_terminal_and_findings_only():
    batch = _batch()
    for width in (60, 80, 120):
        lines = _visible(render(Subject.SCAN_MANY, OutputFormat.TABLE, batch, width=width))
        assert max(len(line) for line in lines) <= width
    plain = render(Subject.SCAN_MANY, OutputFormat.TABLE, batch, show=Show.FINDINGS)
    assert "seed.keras " not in plain  # the clean model has no finding
    assert plain.count("  low-confidence  ") == 4 and "broken.keras: not a model" in plain
    assert "total (3 models)" in plain


# --- JSON: one envelope, one schema per command ------------------------------------------------


def _valid(text: str, command: str) -> dict:
    document = json.loads(text)
    jsonschema.validate(document, load_schema(command))
    assert document["schema_version"] == 1 and document["command"] == command
    assert document["tool"] == {"name": "decay-audit", "version": decay_audit.__version__}
    return document["result"]


@pytest.mark.parametrize("sample", ["zoo.keras", "subclassed.keras", "seed.h5", "tf_module_savedmodel", "zoo_export"])
def test_scan_json_envelope(sample):
    report = decay_audit.scan(SAMPLES / sample)
    result = _valid(render(Subject.SCAN, OutputFormat.JSON, report), "scan")
    assert [v["path"] for v in result["variables"]] == [v.record.path for v in report.variables]
    assert [f["subject"] for f in result["findings"]] == [f.subject for f in report.findings()]
    for show in Show:  # machine-readable output ignores what a person asked to see
        assert render("scan", "json", report, show=show, width=40, color=True) == render("scan", "json", report)


def test_check_and_batch_json_envelopes():
    result = _valid(render(Subject.CHECK, OutputFormat.JSON, _check()), "check")
    assert {f["kind"] for f in result["findings"]} >= {"dead-pattern", "decayed-against-policy"}
    batch = _batch()
    many = _valid(render(Subject.SCAN_MANY, OutputFormat.JSON, batch), "scan-many")
    assert [m["source"] for m in many["models"]] == [r.source for r in batch.reports]
    assert many["errors"] == [{"path": str(SAMPLES / "broken.keras"), "error": "broken.keras: not a model"}]
    single = json.loads(render(Subject.SCAN, OutputFormat.JSON, batch.reports[1]))["result"]
    assert many["models"][1] == single


def test_verify_json_envelope_synthetic_and_every_outcome():
    report = _synthetic_verify(40, HINT)
    report = replace(
        report,
        measurements=report.measurements
        + (replace(report.measurements[0], path="x/double", outcome=Outcome.DOUBLE_DECAY, coupled_steps=3),),
        notes=("a note",),
        dead_selectors=("--expect-decay nothing/*",),
    )
    result = _valid(render(Subject.VERIFY, OutputFormat.JSON, report), "verify")
    assert len(result["variables"]) == 41 and "measurements" not in result
    assert result["mismatches"] == len(report.mismatches) and result["ok"] is False


def test_verify_json_envelope_on_a_live_model():
    keras = pytest.importorskip("keras")
    import verify_setups

    model = verify_setups.compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), exclude=False)
    report = decay_audit.verify(model, steps=2)
    result = _valid(render(Subject.VERIFY, OutputFormat.JSON, report), "verify")
    assert {v["path"]: v["outcome"] for v in result["variables"]} == {
        "dense1/kernel": "ok",
        "dense1/bias": "decayed-against-intent",
        "dense2/kernel": "ok",
        "dense2/bias": "decayed-against-intent",
    }


def test_schemas_share_their_definitions():
    """scan-many embeds scan's result and every schema the same envelope: written once each, kept equal here."""
    schemas = {name: load_schema(name) for name in ("scan", "scan-many", "check", "verify")}
    assert schemas["scan-many"]["$defs"]["scan_result"] == schemas["scan"]["$defs"]["scan_result"]
    for name, schema in schemas.items():
        assert schema["$defs"]["tool"] == schemas["scan"]["$defs"]["tool"]
        assert schema["required"] == ["schema_version", "tool", "command", "result"]
        assert schema["properties"]["command"] == {"const": name}
    kinds = set(schemas["scan"]["$defs"]["finding"]["properties"]["kind"]["enum"])
    from decay_audit.findings import FindingKind

    assert kinds == {k.value for k in FindingKind}
    outcomes = set(schemas["verify"]["$defs"]["measurement"]["properties"]["outcome"]["enum"])
    assert outcomes == {o.value for o in Outcome}


def test_presets_unaffected_by_view():
    """The view changes how a report is shown, never what it says."""
    report = scan_inventory(decay_audit.load(SAMPLES / "seed.keras"), Policy(Preset.DECAY_ALL))
    wide = _visible(render(Subject.SCAN, OutputFormat.TABLE, report, width=200))
    assert sum(1 for line in wide if " yes " in f"{line} ") == 4


def test_every_loader_name_is_in_the_scan_schemas():
    from decay_audit.loaders.interface import LoaderName
    from decay_audit.schemas import load_schema

    for name in ("scan", "scan-many"):
        text = json.dumps(load_schema(name))
        for loader in LoaderName:
            assert f'"{loader.value}"' in text, (name, loader)


def test_a_column_with_nothing_to_say_is_left_out_on_a_terminal():
    """A subclassed model's file names no layer classes: the class column would only take width
    from the evidence, so it is not drawn (and not listed as left out either)."""
    variables = tuple(
        _variable(f"model/dense{i}/var_0", None, (4, 4), Kind.KERNEL, True, evidence="shape [4, 4]") for i in range(3)
    )
    report = ScanReport(Inventory("sub.keras", "keras-zip", tuple(v.record for v in variables)), variables, Policy())
    headers = [
        line for line in _visible(render(Subject.SCAN, OutputFormat.TABLE, report, width=100)) if "evidence" in line
    ]
    assert headers and all(" class " not in line for line in headers)
    assert "left out" not in render(Subject.SCAN, OutputFormat.TABLE, report, width=100)
    with_class = _small_scan()  # one class known: the column stays
    assert any(" class " in line for line in _visible(render(Subject.SCAN, OutputFormat.TABLE, with_class, width=100)))
