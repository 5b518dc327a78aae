"""``--format sarif``: valid against the official SARIF 2.1.0 schema (shipped, offline), one rule per
finding type, and locations a code-scanning tool can file the alert under."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
from pathlib import Path

import jsonschema
import pytest
from conftest import REPO, SAMPLES, run_cli

from decay_audit.findings import RULES, FindingKind, Outcome, rule_for
from decay_audit.report import formats_for
from decay_audit.report.sarif import function_line, setup_line
from decay_audit.schemas import load_sarif_schema

TESTS = Path(__file__).resolve().parent


def _valid(text: str) -> dict:
    document = json.loads(text)
    validator = jsonschema.Draft4Validator(
        load_sarif_schema(), format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    validator.validate(document)
    assert document["version"] == "2.1.0" and len(document["runs"]) == 1
    return document


def _results(document: dict) -> list[dict]:
    return document["runs"][0]["results"]


def _rule_names(document: dict) -> dict[str, str]:
    return {rule["id"]: rule["name"] for rule in document["runs"][0]["tool"]["driver"]["rules"]}


def test_shipped_schema_is_the_oasis_one_and_rejects_broken_logs():
    schema = load_sarif_schema()
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    assert "docs.oasis-open.org/sarif" in schema["id"]
    validator = jsonschema.Draft4Validator(schema)
    assert not list(validator.iter_errors({"version": "2.1.0", "runs": []}))
    assert list(validator.iter_errors({"version": "2.1.0", "runs": [{"tool": {}}]}))  # driver missing
    assert list(validator.iter_errors({"version": "2.1.0", "runs": [], "extra": 1}))


def test_every_finding_type_has_one_rule():
    names = {rule.name for rule in RULES}
    assert len(names) == len(RULES) and len({rule.id for rule in RULES}) == len(RULES)
    assert {rule_for(kind).name for kind in FindingKind} <= names  # every finding kind has a rule (KeyError if not)
    failing = [outcome for outcome in Outcome if outcome is not Outcome.OK]
    own_rules = {rule_for(outcome).name for outcome in failing}
    assert "verify-mismatch" not in own_rules, "a new verify outcome needs its own SARIF rule"
    assert len(own_rules) == len(failing)
    for wanted in (
        "dead-pattern",
        "over-broad-pattern",
        "decayed-against-policy",
        "double-decay",
        "never-switched-on",
        "saved-optimizer-decays-all",
        "low-confidence",
        "conflicting-evidence",
    ):
        assert wanted in names
    for subject in ("scan", "scan-many", "check", "verify"):
        assert "sarif" in formats_for(subject)


def test_scan_sarif_low_confidence_located_in_the_model_file():
    result = run_cli("scan", "sample_models/subclassed.keras", "--format", "sarif", "--strict", cwd=REPO)
    assert result.returncode == 1
    assert "low-confidence" in result.stderr  # the --strict summary goes to stderr, never into the log
    document = _valid(result.stdout)
    json_report = json.loads(run_cli("scan", "sample_models/subclassed.keras", "--format", "json", cwd=REPO).stdout)[
        "result"
    ]
    low = [v["path"] for v in json_report["variables"] if v["confidence"] == "low"]
    names = _rule_names(document)
    flagged = [
        r["locations"][0]["logicalLocations"][0]["name"]
        for r in _results(document)
        if names[r["ruleId"]] == "low-confidence"
    ]
    assert sorted(flagged) == sorted(low) and low
    for result_object in _results(document):
        location = result_object["locations"][0]["physicalLocation"]
        assert location["artifactLocation"] == {"uri": "sample_models/subclassed.keras", "uriBaseId": "%SRCROOT%"}
        assert "region" not in location  # a binary file: the whole file, never "line 1"
        assert result_object["partialFingerprints"]["decayAudit/v1"]
        assert result_object["partialFingerprints"]["primaryLocationLineHash"].endswith(":1")


def test_scan_sarif_clean_model_has_no_results(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "elsewhere").mkdir()
    shutil.copy(SAMPLES / "zoo.keras", tmp_path / "models" / "zoo.keras")
    model = tmp_path / "models" / "zoo.keras"
    document = _valid(run_cli("scan", str(model), "--format", "sarif", cwd=tmp_path / "elsewhere").stdout)
    assert _results(document) == []
    # in no git work tree and not under the cwd: an absolute URI
    assert document["runs"][0]["artifacts"][0]["location"] == {"uri": model.resolve().as_uri()}


def test_a_model_in_a_git_work_tree_is_located_relative_to_its_root(tmp_path):
    repo, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    (repo / "models").mkdir(parents=True)
    elsewhere.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    shutil.copy(SAMPLES / "subclassed.keras", repo / "models" / "sub.keras")
    result = run_cli("scan", str(repo / "models" / "sub.keras"), "--format", "sarif", "--strict", cwd=elsewhere)
    document = _valid(result.stdout)
    run = document["runs"][0]
    assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == repo.resolve().as_uri() + "/"
    assert run["artifacts"][0]["location"] == {"uri": "models/sub.keras", "uriBaseId": "%SRCROOT%"}
    low = [r for r in _results(document) if _rule_names(document)[r["ruleId"]] == "low-confidence"]
    assert low, "subclassed.keras has low-confidence variables"
    for item in low:
        location = item["locations"][0]
        assert location["physicalLocation"] == {
            "artifactLocation": {"uri": "models/sub.keras", "uriBaseId": "%SRCROOT%"}
        }
        logical = location["logicalLocations"][0]
        assert logical["kind"] == "variable" and logical["name"] in item["message"]["text"]


def test_check_sarif_pattern_findings_sit_in_the_rule_file(tmp_path):
    shutil.copy(SAMPLES / "zoo.keras", tmp_path / "zoo.keras")
    (tmp_path / "rules.json").write_text(json.dumps({"exclude_var_names": ["LayerNorm", "kernel"]}))
    result = run_cli(
        "check",
        "zoo.keras",
        "--target",
        "keras",
        "--keras-backend",
        "jax",
        "--rules",
        "rules.json",
        "--format",
        "sarif",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    document = _valid(result.stdout)
    names = _rule_names(document)
    by_rule: dict[str, list[dict]] = {}
    for item in _results(document):
        by_rule.setdefault(names[item["ruleId"]], []).append(item)
    (dead,) = by_rule["dead-pattern"]
    assert dead["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "rules.json"
    assert dead["locations"][0]["logicalLocations"][0]["name"] == "LayerNorm"
    assert dead["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "zoo.keras"
    assert "kernel" in [i["locations"][0]["logicalLocations"][0]["name"] for i in by_rule["over-broad-pattern"]]
    decayed = by_rule["decayed-against-policy"]
    assert decayed and all(
        i["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "zoo.keras" for i in decayed
    )
    table = run_cli(
        "check", "zoo.keras", "--target", "keras", "--keras-backend", "jax", "--rules", "rules.json", cwd=tmp_path
    )
    assert table.stdout.count("decayed-against-policy") == len(decayed)  # the same findings as the table


_RULE_LAYOUTS = {
    "rules.json": '{\n  "exclude_paths": ["LayerNorm/gamma"],\n  "exclude_var_names": ["kernel", "LayerNorm"]\n}\n',
    "rules.yaml": "exclude_paths:\n- LayerNorm/gamma\nexclude_var_names: [kernel, 'LayerNorm']\n",
}
"""Rule files whose dead pattern ``LayerNorm`` is on line 3, after a line that also holds the
text ``LayerNorm`` (a dead ``exclude_paths`` entry): a text search would land on line 2."""


@pytest.mark.parametrize("name", list(_RULE_LAYOUTS))
def test_check_sarif_locates_each_pattern_at_its_line_and_column(tmp_path, name):
    shutil.copy(SAMPLES / "zoo.keras", tmp_path / "zoo.keras")
    text = _RULE_LAYOUTS[name]
    (tmp_path / name).write_text(text)
    lines = text.splitlines()
    result = run_cli(
        "check",
        "zoo.keras",
        "--target",
        "keras",
        "--keras-backend",
        "jax",
        "--rules",
        name,
        "--format",
        "sarif",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    document = _valid(result.stdout)
    names = _rule_names(document)
    regions = {
        (names[r["ruleId"]], r["locations"][0]["logicalLocations"][0]["name"]): r["locations"][0]["physicalLocation"]
        for r in _results(document)
        if names[r["ruleId"]] in ("dead-pattern", "over-broad-pattern")
    }
    quote = '"' if name.endswith(".json") else "'"

    def where(line: int, token: str) -> dict:
        column = lines[line - 1].index(token) + 1
        return {"startLine": line, "startColumn": column, "endLine": line, "endColumn": column + len(token)}

    assert regions[("dead-pattern", "LayerNorm")]["region"] == where(3, f"{quote}LayerNorm{quote}")
    assert regions[("over-broad-pattern", "kernel")]["region"] == where(3, '"kernel"' if quote == '"' else "kernel")
    path_line = 2
    assert regions[("dead-pattern", "path LayerNorm/gamma")]["region"] == where(
        path_line, '"LayerNorm/gamma"' if quote == '"' else "LayerNorm/gamma"
    )
    assert all(r["artifactLocation"] == {"uri": name, "uriBaseId": "%SRCROOT%"} for r in regions.values())


def test_setup_line_follows_one_call_into_the_same_file(tmp_path):
    setup = tmp_path / "train.py"
    setup.write_text(
        "import keras\n"  # 1
        "\n"  # 2
        "def optimizer(model):\n"  # 3
        "    schedule = keras.optimizers.schedules.CosineDecay(1e-3, 100)\n"  # 4: not an optimizer
        "    return keras.optimizers.AdamW(schedule, weight_decay=0.1)\n"  # 5
        "\n"  # 6
        "def make():\n"  # 7
        "    model = keras.Sequential([keras.layers.Dense(2)])\n"  # 8
        "    return {'model': model, 'optimizer': optimizer(model)}\n"  # 9
        "\n"  # 10
        "def bare():\n"  # 11
        "    return None\n"  # 12
        "\n"  # 13
        "def excluding():\n"  # 14
        "    opt = optimizer(None)\n"  # 15
        "    opt.exclude_from_weight_decay(var_names=['bias'])\n"  # 16
        "    return opt\n"  # 17
    )
    assert setup_line(setup, "make") == 5  # the optimizer built one call down
    assert setup_line(setup, "bare") == 11  # nothing to point at: the def line
    assert setup_line(setup, "excluding") == 16  # the exclusion call before any construction


def test_verify_sarif_points_at_the_exclude_from_weight_decay_call():
    tree = ast.parse((REPO / "docs" / "examples" / "train.py").read_text())
    (make,) = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "make"]
    (call,) = [
        node
        for node in ast.walk(make)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "exclude_from_weight_decay"
    ]
    assert call.lineno > make.lineno
    result = run_cli(
        "verify", "--setup", "docs/examples/train.py:make", "--preset", "decay-all", "--format", "sarif", cwd=REPO
    )
    assert result.returncode == 1, result.stderr  # make excludes the biases decay-all wants decayed
    document = _valid(result.stdout)
    assert _results(document)
    for item in _results(document):
        location = item["locations"][0]["physicalLocation"]
        assert location["artifactLocation"] == {"uri": "docs/examples/train.py", "uriBaseId": "%SRCROOT%"}
        assert location["region"] == {"startLine": call.lineno}


def test_check_sarif_saved_optimizer(tmp_path):
    import builders
    import keras

    model = builders.seed_model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01), loss="mse")
    model.save(tmp_path / "compiled.keras")
    result = run_cli(
        "check",
        "compiled.keras",
        "--target",
        "keras",
        "--var-names",
        "(^|/)bias(:0)?$",
        "--format",
        "sarif",
        cwd=tmp_path,
    )
    document = _valid(result.stdout)
    names = _rule_names(document)
    assert [names[r["ruleId"]] for r in _results(document)] == ["saved-optimizer-decays-all"]
    assert result.returncode == 1


def test_verify_sarif_points_at_the_setup_function(tmp_path):
    setup = tmp_path / "train.py"
    setup.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r}); sys.path.insert(0, {str(SAMPLES)!r})\n"
        "import verify_setups\n"
        "\n"
        "\n"
        "def make():\n"
        "    return verify_setups.method_1()\n"
    )
    assert function_line(setup, "make") == 6
    result = run_cli(
        "verify", "--setup", "train.py:make", "--preset", "no-bias-norm", "--format", "sarif", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    document = _valid(result.stdout)
    names = _rule_names(document)
    found = {(names[r["ruleId"]], r["locations"][0]["logicalLocations"][0]["name"]) for r in _results(document)}
    assert ("double-decay", "dense1/kernel") in found  # Adam(weight_decay) + L2 in the loss (FACTS method 1)
    for item in _results(document):
        location = item["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == "train.py" and location["region"]["startLine"] == 6


def test_sarif_escapes_hostile_names(tmp_path):
    from decay_audit.report.sarif import Result, physical, sarif_log

    log = sarif_log([Result("low-confidence", "\x1b[31mred\u202e", physical(tmp_path / "m.keras"), "a\x00b")])
    assert "\x1b" not in log and "\u202e" not in log
    assert _results(_valid(log))[0]["locations"][0]["logicalLocations"][0]["name"] == "a\x00b"


@pytest.mark.parametrize("fmt", ["csv", "markdown"])
def test_formats_a_command_does_not_have_are_usage_errors(fmt):
    result = run_cli("check", str(SAMPLES / "seed.keras"), "--target", "keras", "--var-names", "bias", "--format", fmt)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
