"""Project settings ([tool.decay-audit]), baselines, verify's cheap checks and the atomic writer's mode."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from decay_audit.baseline import (
    BaselinedScanReport,
    baseline_text,
    fingerprint,
    model_key,
    read_baseline,
    through_baseline,
    write_baseline_file,
)
from decay_audit.config import (
    NO_SETTINGS,
    ColorChoice,
    Settings,
    find_pyproject,
    load_settings,
    merge,
    parse_settings,
    use_color,
)
from decay_audit.errors import DecayAuditError, OptionError, SetupError, UsageError
from decay_audit.files import write_atomically
from decay_audit.findings import Finding, FindingKind
from decay_audit.kinds import Preset
from decay_audit.stages.verify import VerifyOptions, precheck

# --- settings -------------------------------------------------------------------------------------


def _project(tmp_path: Path, text: str) -> Path:
    (tmp_path / "pyproject.toml").write_text(text)
    inner = tmp_path / "src" / "pkg"
    inner.mkdir(parents=True)
    return inner


def test_settings_are_found_walking_up_and_paths_resolve_against_the_file(tmp_path):
    inner = _project(
        tmp_path,
        '[tool.decay-audit]\npreset = "no-bias-norm"\nbaseline = "ci/baseline.json"\nstrict = true\n'
        '[tool.decay-audit.overrides]\nno-decay = ["kind:embedding"]\n'
        "[tool.decay-audit.limits]\nvariables = 7\n",
    )
    assert find_pyproject(inner) == tmp_path / "pyproject.toml"
    settings = load_settings(inner)
    assert settings.preset is Preset.NO_BIAS_NORM and settings.strict is True
    assert settings.no_decay == ("kind:embedding",) and settings.decay == ()
    assert settings.baseline == tmp_path / "ci" / "baseline.json"
    assert settings.limits == {"max_variables": 7}


def test_the_nearest_pyproject_wins_even_without_the_table(tmp_path):
    inner = _project(tmp_path, '[tool.decay-audit]\npreset = "ndim"\n')
    (inner / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert load_settings(inner) == NO_SETTINGS
    assert load_settings(inner.parent).preset is Preset.NDIM


@pytest.mark.parametrize(
    "text, fragments",
    [
        ('[tool.decay-audit]\npresett = "ndim"\n', ["unknown key 'presett'", "did you mean 'preset'?"]),
        ("[tool.decay-audit]\nstirct = true\n", ["unknown key 'stirct'", "did you mean 'strict'?"]),
        ('[tool.decay-audit.overrides]\nno_decay = ["x"]\n', ["unknown key 'no_decay'", "'no-decay'"]),
        ("[tool.decay-audit.limits]\nvariabels = 3\n", ["unknown key 'variabels'", "'variables'"]),
        ('[tool.decay-audit]\npreset = "nbim"\n', ["unknown preset 'nbim'", "did you mean 'ndim'?"]),
        ("[tool.decay-audit]\nstrict = 1\n", ["strict must be true or false"]),
        ("[tool.decay-audit.overrides]\ndecay = [1]\n", ["overrides.decay must be a list of strings"]),
        ("[tool.decay-audit.limits]\nvariables = -1\n", ["limits.variables must be a non-negative integer"]),
        ("[tool.decay-audit\n", ["not valid TOML"]),
    ],
)
def test_bad_settings_name_the_file_and_the_key(tmp_path, text, fragments):
    inner = _project(tmp_path, text)
    with pytest.raises(UsageError) as caught:
        load_settings(inner)
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "pyproject.toml")) and "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_command_line_values_win_over_the_file():
    settings = parse_settings(
        {
            "preset": "ndim",
            "overrides": {"decay": ["re:head"], "no-decay": ["kind:embedding"]},
            "limits": {"variables": 7, "objects": 9},
            "baseline": "b.json",
            "strict": True,
        },
        Path("/project/pyproject.toml"),
    )
    from_file = merge(settings)
    assert (from_file.preset, from_file.decay, from_file.no_decay) == ("ndim", ("re:head",), ("kind:embedding",))
    assert from_file.strict is True and from_file.baseline == Path("/project/b.json")
    assert from_file.limits.max_variables == 7 and from_file.limits.max_objects == 9
    given = merge(
        settings,
        preset="decay-all",
        no_decay=("re:bias",),
        limits=("variables=100",),
        baseline=Path("other.json"),
        strict=False,
    )
    assert given.preset == "decay-all" and given.strict is False and given.baseline == Path("other.json")
    assert (given.decay, given.no_decay) == ((), ("re:bias",))  # the command line's overrides replace the file's
    assert given.limits.max_variables == 100 and given.limits.max_objects == 9  # limits merge per name
    assert merge(settings, no_baseline=True).baseline is None
    with_policy = merge(settings, policy_file=Path("policy.yaml"))
    assert (with_policy.decay, with_policy.no_decay) == ((), ())  # a policy file holds its own overrides


def test_defaults_without_settings():
    effective = merge(Settings())
    assert effective.preset == "kernels-only" and effective.strict is False and effective.baseline is None
    with pytest.raises(UsageError, match="--limit"):
        merge(Settings(), limits=("bogus=3",))


@pytest.mark.parametrize(
    "choice, tty, environ, expected",
    [
        ("auto", True, {}, True),
        ("auto", True, {"NO_COLOR": ""}, True),
        ("auto", True, {"NO_COLOR": "1"}, False),
        ("auto", False, {}, False),
        ("always", False, {"NO_COLOR": "1"}, True),
        ("never", True, {}, False),
    ],
)
def test_color_auto_only_on_a_terminal_without_no_color(choice, tty, environ, expected):
    assert use_color(ColorChoice(choice), tty, environ) is expected


# --- baselines ------------------------------------------------------------------------------------


def test_model_key_is_relative_to_the_baseline_file(tmp_path):
    assert model_key(tmp_path / "models" / "a.keras", tmp_path / "baseline.json") == "models/a.keras"
    assert model_key(tmp_path / "a.keras", tmp_path / "ci" / "baseline.json") == "../a.keras"


def _findings() -> list[tuple[str, Finding]]:
    return [
        ("m.keras", Finding(FindingKind.LOW_CONFIDENCE, "layer/var_0", "judged kernel from shape")),
        ("m.keras", Finding(FindingKind.POLICY, "re:nothing", "policy override matches no variable")),
    ]


def test_baseline_round_trip_is_sorted_and_reproducible(tmp_path):
    path = tmp_path / "baseline.json"
    written = write_baseline_file(path, [(str(tmp_path / m), f) for m, f in _findings()], "--write-baseline")
    text = path.read_text()
    assert text == baseline_text([(str(tmp_path / m), f) for m, f in reversed(_findings())], path)
    document = json.loads(text)
    assert document["version"] == 1 and [e["kind"] for e in document["findings"]] == ["low-confidence", "policy"]
    assert read_baseline(path) == written
    known = Finding(FindingKind.LOW_CONFIDENCE, "layer/var_0", "other wording, same finding")
    new = Finding(FindingKind.LOW_CONFIDENCE, "layer/var_1", "judged kernel from shape")
    assert written.split([known, new], tmp_path / "m.keras") == ([new], [known])
    assert written.split([known], tmp_path / "other.keras") == ([known], [])  # another model: not baselined


@pytest.mark.parametrize(
    "document, fragment",
    [
        ([], "expected a JSON object with a version field"),
        ({"findings": []}, "expected a JSON object with a version field"),
        ({"version": 2, "findings": []}, "baseline version 2 is not supported"),
        ({"version": 1, "findings": {}}, "'findings' must be a list"),
        ({"version": 1, "findings": [], "extra": 1}, "unknown key 'extra'"),
        ({"version": 1, "findings": [{"kind": "policy"}]}, "findings[0] needs a string 'fingerprint'"),
        (
            {"version": 1, "findings": [{"fingerprint": "0" * 64, "kind": "policy", "subject": "s", "model": "m"}]},
            "fingerprint does not match",
        ),
    ],
)
def test_a_bad_baseline_is_one_error_naming_the_file(tmp_path, document, fragment):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UsageError) as caught:
        read_baseline(path)
    assert str(caught.value).startswith(str(path)) and fragment in str(caught.value)


def test_a_missing_baseline_is_an_error(tmp_path):
    with pytest.raises(DecayAuditError, match="no such file"):
        read_baseline(tmp_path / "nope.json")


def test_a_baselined_scan_report_counts_only_new_findings(tmp_path):
    from decay_audit.stages.scan import scan

    model = Path(__file__).resolve().parents[1] / "sample_models" / "subclassed.keras"
    report = scan(model)
    assert report.strict_problems() == len(report.findings()) > 1
    path = tmp_path / "baseline.json"
    first = report.findings()[0]
    baseline = write_baseline_file(path, [(str(model), first)], "--write-baseline")
    seen = through_baseline(report, baseline, model)
    assert isinstance(seen, BaselinedScanReport) and seen.variables == report.variables
    assert seen.findings() == report.findings()[1:] and seen.baselined() == [first]
    assert seen.strict_problems() == report.strict_problems() - 1
    assert fingerprint(first.kind, first.subject, model_key(model, path)) in baseline.fingerprints


# --- verify's cheap checks ------------------------------------------------------------------------


def _setup_file(tmp_path: Path, text: str = "import keras\n\n\ndef make():\n    return None\n") -> Path:
    path = tmp_path / "train.py"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "model, setup, options, error, fragment",
    [
        (None, None, {}, UsageError, "exactly one of MODEL or --setup"),
        ("m.keras", "train.py:make", {}, UsageError, "exactly one of MODEL or --setup"),
        (None, "{dir}/train.py", {}, OptionError, "did you mean '{dir}/train.py:make'?"),
        (None, "{dir}/train.py:mkae", {}, UsageError, "has no function 'mkae' (did you mean 'make'?)"),
        (None, "{dir}/missing.py:make", {}, UsageError, "no such file"),
        ("{dir}/missing.keras", None, {}, DecayAuditError, "no such file or directory"),
        (None, "{dir}/train.py:make", {"backend": "mxnet"}, OptionError, "unknown backend 'mxnet'"),
        (None, "{dir}/train.py:make", {"backend": "numpy"}, OptionError, "inference only"),
        (None, "{dir}/train.py:make", {"optimizer": "adamw"}, OptionError, "apply to MODEL"),
        ("{dir}/train.py", None, {"optimizer": "nope"}, OptionError, "unknown optimizer 'nope'"),
        (None, "{dir}/train.py:make", {"policy": "nope"}, OptionError, "unknown preset 'nope'"),
        (None, "{dir}/train.py:make", {"rules": "{dir}/missing.json"}, UsageError, "no such file"),
        (None, "{dir}/train.py:make", {"device": "tpu"}, OptionError, "expected cpu or gpu"),
    ],
)
def test_precheck_fails_without_importing_anything(tmp_path, model, setup, options, error, fragment):
    _setup_file(tmp_path)
    fill = {"dir": str(tmp_path)}
    options = {k: v.format(**fill) if isinstance(v, str) else v for k, v in options.items()}
    with pytest.raises(error) as caught:
        precheck(
            model.format(**fill) if model else None,
            setup.format(**fill) if setup else None,
            VerifyOptions(**options),
        )
    assert fragment.format(**fill) in str(caught.value)


def test_precheck_reads_the_set_up_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = _setup_file(tmp_path, f"open({str(marker)!r}, 'w').close()\n\ndef make():\n    return None\n")
    precheck(None, f"{path}:make", VerifyOptions())
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        "from helpers import *\n",
        "def __getattr__(name):\n    return lambda: None\n",
        "globals()['make'] = lambda: None\n",
        "from factories import make\n",
        "if True:\n    make = lambda: None\n",
        "try:\n    from fast import make\nexcept ImportError:\n    from slow import make\n",
        "def install():\n    global make\n    make = lambda: None\n",
        "import keras\nraise KeyError('missing config entry')\n",  # the import's own error is the better one
    ],
)
def test_precheck_accepts_names_it_cannot_rule_out(tmp_path, text):
    path = _setup_file(tmp_path, text)
    precheck(None, f"{path}:make", VerifyOptions())


def test_precheck_reports_a_syntax_error_as_the_import_stage(tmp_path):
    path = _setup_file(tmp_path, "def make(:\n")
    with pytest.raises(SetupError) as caught:
        precheck(None, f"{path}:make", VerifyOptions())
    assert caught.value.stage.value == "import" and "syntax error line 1" in str(caught.value)


# --- the atomic writer ----------------------------------------------------------------------------


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        write_atomically(tmp_path / "report.json", "{}\n")
        write_atomically(tmp_path / "plot.png", b"\x89PNG")
    finally:
        os.umask(previous)
    for name in ("report.json", "plot.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png", "report.json"]  # no temporary left
