"""The ``decay-audit scan`` command as users and CI run it: formats, exit codes, bad input, safety."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import textwrap
import zipfile
from pathlib import Path

import jsonschema
import pytest
from conftest import SAMPLES, run_cli

from decay_audit.schemas import load_schema


def _digest(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(_digest(p).encode() for p in sorted(path.rglob("*")) if p.is_file())).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize(
    "sample",
    [
        "seed.keras",
        "zoo.keras",
        "seed.h5",
        "seed.weights.h5",
        "seed_export",
        "seed_tfsaved",
        "tf_keras_savedmodel",
        "tf_keras.h5",
        "tf_module_savedmodel",
        "subclassed.keras",
        "zoo_export",
    ],
)
def test_json_output_validates_against_shipped_schema(sample):
    before = _digest(SAMPLES / sample)
    result = run_cli("scan", str(SAMPLES / sample), "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.validate(document, load_schema("scan"))
    scan = document["result"]
    assert scan["summary"]["variables"] == len(scan["variables"]) > 0
    assert sum(k["variables"] for k in scan["summary"]["per_kind"]) == scan["summary"]["variables"]
    assert _digest(SAMPLES / sample) == before  # never modify the input


def test_table_groups_by_layer_and_summarises():
    result = run_cli("scan", str(SAMPLES / "seed.keras"))
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert any(line.startswith("dense1 (Dense)") and "dense1/kernel" in line for line in lines)
    assert any("dense1/bias" in line and not line.startswith("dense1") for line in lines)
    assert "decayed: 2 variables (192 parameters); excluded: 2 variables (20 parameters)" in result.stdout


def test_markdown_and_csv(tmp_path):
    out = tmp_path / "report.md"
    result = run_cli("scan", str(SAMPLES / "seed.keras"), "--format", "markdown", "--output", str(out))
    assert result.returncode == 0 and result.stdout == ""
    text = out.read_text()
    assert text.startswith("## decay-audit scan") and "| dense1 (Dense)" in text
    csv_result = run_cli("scan", str(SAMPLES / "seed.keras"), "--format", "csv")
    rows = csv_result.stdout.splitlines()
    assert rows[0].startswith("path,layer,layer_class")
    assert rows[1].startswith("dense1/kernel,dense1,Dense,kernel,8x16")


def _assert_one_line_error(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def _corrupt_inputs(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    seed_keras = (SAMPLES / "seed.keras").read_bytes()
    cases = {}
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(seed_keras[: len(seed_keras) // 2])
    cases["truncated zip"] = (truncated, "zip")
    bad_json = tmp_path / "badjson.keras"
    with zipfile.ZipFile(bad_json, "w") as archive:
        archive.writestr("config.json", "{not json")
        archive.writestr("model.weights.h5", b"")
    cases["config not JSON"] = (bad_json, "not valid JSON")
    h5 = (SAMPLES / "seed.h5").read_bytes()
    truncated_h5 = tmp_path / "truncated.h5"
    truncated_h5.write_bytes(h5[:600])
    cases["truncated h5"] = (truncated_h5, "HDF5")
    garbage_pb = tmp_path / "garbage_savedmodel"
    garbage_pb.mkdir()
    (garbage_pb / "saved_model.pb").write_bytes(b"\x12\xff\xff\xff\x0f" + b"x" * 20)
    cases["corrupt pb"] = (garbage_pb, "corrupt protobuf")
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    cases["empty directory"] = (empty_dir, "exactly one model, found 0")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    cases["not a model"] = (text, "not a recognised model format")
    cases["missing"] = (tmp_path / "nope.keras", "no such file")
    return cases


def test_bad_inputs_exit_2_with_one_line_naming_the_file(tmp_path):
    for label, (path, fragment) in _corrupt_inputs(tmp_path).items():
        out = tmp_path / f"{label.replace(' ', '_')}.json"
        result = run_cli("scan", str(path), "--format", "json", "--output", str(out))
        _assert_one_line_error(result, str(path), fragment)
        assert not out.exists(), label
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_limits_are_enforced_and_named(tmp_path):
    result = run_cli("scan", str(SAMPLES / "zoo.keras"), "--limit", "config-bytes=100")
    _assert_one_line_error(result, "config.json", "config-bytes", "--limit config-bytes=N")
    result = run_cli("scan", str(SAMPLES / "zoo.keras"), "--limit", "variables=3")
    _assert_one_line_error(result, "variables", "exceeds the limit 3")
    result = run_cli("scan", str(SAMPLES / "zoo.keras"), "--limit", "bogus=3")
    _assert_one_line_error(result, "--limit")


def test_scan_never_imports_tensorflow_or_keras():
    code = textwrap.dedent(f"""
        import sys
        import decay_audit
        in_process = decay_audit.Limits(read_seconds=0)  # read here, not in a child, so imports show
        for sample in ("seed.keras", "zoo.keras", "seed.h5", "seed.weights.h5", "seed_export",
                       "tf_keras_savedmodel", "tf_module_savedmodel"):
            decay_audit.scan({str(SAMPLES)!r} + "/" + sample, limits=in_process)
            decay_audit.scan({str(SAMPLES)!r} + "/" + sample)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras"))
        print(heavy)
    """)
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_help_is_instant_and_names_commands():
    result = run_cli("--help")
    assert result.returncode == 0 and "scan" in result.stdout and "Exit codes" in result.stdout
    result = run_cli("scan", "--help")
    assert "--format" in result.stdout and "--limit" in result.stdout


BUILD_WITH_SIDE_EFFECTS = """
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras
marker = sys.argv[2]

@keras.saving.register_keras_serializable(package="hostile")
class Planted(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if os.environ.get("PLANT"):
            open(marker + ".init", "w").close()
    def build(self, shape):
        self.w = self.add_weight(shape=(shape[-1], 2), name="w")
        if os.environ.get("PLANT"):
            open(marker + ".build", "w").close()
    def call(self, x):
        return keras.ops.matmul(x, self.w)
    @classmethod
    def from_config(cls, config):
        open(marker + ".from_config", "w").close()
        return cls(**config)

def touch(x):
    open(marker + ".lambda", "w").close()
    return x

inputs = keras.Input((3,))
x = keras.layers.Lambda(touch)(inputs)
x = Planted(name="planted")(x)
outputs = keras.layers.Dense(1, name="head")(x)
keras.Model(inputs, outputs).save(sys.argv[1])
for suffix in (".init", ".build", ".from_config", ".lambda"):
    if os.path.exists(marker + suffix):
        os.remove(marker + suffix)
"""


def test_custom_classes_and_lambdas_scan_without_running(tmp_path):
    """The class is registered only in the building process: the scanner cannot import it
    and must never run its code, nor the Lambda's marshalled function."""
    import subprocess

    script = tmp_path / "build.py"
    script.write_text(BUILD_WITH_SIDE_EFFECTS)
    model_path = tmp_path / "hostile.keras"
    marker = tmp_path / "marker"
    built = subprocess.run(
        [sys.executable, str(script), str(model_path), str(marker)], capture_output=True, text=True, timeout=300
    )
    assert built.returncode == 0, built.stderr
    result = run_cli("scan", str(model_path), "--format", "json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)["result"]
    by_path = {v["path"]: v for v in document["variables"]}
    assert set(by_path) == {"planted/var_0", "head/kernel", "head/bias"}
    assert by_path["planted/var_0"]["layer_class"] == "Planted"
    assert by_path["planted/var_0"]["kind"] == "kernel" and by_path["planted/var_0"]["confidence"] == "low"
    assert by_path["head/kernel"]["decay"] is True and by_path["head/bias"]["decay"] is False
    assert any("custom classes" in note for note in document["notes"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build.py", "hostile.keras"]


def test_read_only_input_is_scanned_and_untouched(tmp_path):
    target = tmp_path / "ro"
    shutil.copytree(SAMPLES / "seed_export", target)
    copy = tmp_path / "seed.keras"
    shutil.copy(SAMPLES / "seed.keras", copy)
    for path in (copy, *target.rglob("*")):
        os.chmod(path, 0o555 if path.is_dir() else 0o444)
    os.chmod(target, 0o555)
    before = (_digest(copy), _digest(target))
    assert run_cli("scan", str(copy)).returncode == 0
    assert run_cli("scan", str(target)).returncode == 0
    assert (_digest(copy), _digest(target)) == before


# --- the same options on every command ------------------------------------------------------------

COMMANDS = ("scan", "rules", "check", "verify")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_the_shared_options(command):
    text = run_cli(command, "--help").stdout
    for option in ("--format", "--output", "-o", "--quiet", "-q", "--strict", "--no-strict", "--exit-zero"):
        assert option in text, (command, option)
    if command != "rules":
        for option in ("--show", "--color"):
            assert option in text, (command, option)
    if command in ("scan", "check"):
        assert "--baseline" in text and "--write-baseline" in text


def test_exit_zero_keeps_the_report_and_usage_errors_still_exit_2(tmp_path):
    strict = run_cli("scan", str(SAMPLES / "subclassed.keras"), "--strict", "--format", "csv")
    assert strict.returncode == 1 and "(--strict)" in strict.stderr
    zero = run_cli("scan", str(SAMPLES / "subclassed.keras"), "--strict", "--format", "csv", "--exit-zero")
    assert zero.returncode == 0 and zero.stdout == strict.stdout and "(--strict)" in zero.stderr
    check = ["check", str(SAMPLES / "seed.keras"), "--target", "keras", "--var-names", "nothing"]
    assert run_cli(*check).returncode == 1
    assert run_cli(*check, "--exit-zero").returncode == 0
    _assert_one_line_error(run_cli("scan", str(tmp_path / "nope.keras"), "--exit-zero"), "no such file")
    _assert_one_line_error(run_cli(*check, "--exit-zero", "--limit", "bogus=1"), "--limit")


def test_check_and_rules_write_output_files_with_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        checked = run_cli(
            "check",
            str(SAMPLES / "seed.keras"),
            "--target",
            "keras",
            "--var-names",
            "nothing",
            "-o",
            str(tmp_path / "c.json"),
            "--format",
            "json",
        )
        rules = run_cli(
            "rules",
            str(SAMPLES / "seed.keras"),
            "--target",
            "native",
            "--format",
            "yaml",
            "-o",
            str(tmp_path / "r.txt"),
        )
    finally:
        os.umask(previous)
    assert checked.returncode == 1 and checked.stdout == "" and "dead-pattern" in (tmp_path / "c.json").read_text()
    assert rules.returncode == 0 and (tmp_path / "r.txt").read_text().startswith(
        "schema_version: 1"
    )  # YAML by --format
    for name in ("c.json", "r.txt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644


def test_rules_strict_fails_on_uncertain_verdicts_after_writing(tmp_path):
    out = tmp_path / "rules.json"
    result = run_cli("rules", str(SAMPLES / "subclassed.keras"), "--target", "native", "-o", str(out), "--strict")
    assert result.returncode == 1 and "(--strict)" in result.stderr and json.loads(out.read_text())["variables"]
    assert run_cli("rules", str(SAMPLES / "seed.keras"), "--target", "native", "--strict").returncode == 0


@pytest.mark.parametrize(
    "arguments, env, expected",
    [
        ([], {}, ("all", False, None)),
        (["--show", "findings"], {}, ("findings", False, None)),
        (["--color", "always"], {"NO_COLOR": "1"}, ("all", True, None)),
        (["--color", "never"], {}, ("all", False, None)),
        (["--color", "auto"], {}, ("all", False, None)),  # the runner's stdout is no terminal
    ],
)
def test_show_and_color_reach_render(monkeypatch, arguments, env, expected):
    """The contract with decay_audit.report.render: show (a Show), color (a bool), width (None off a terminal)."""
    from click.testing import CliRunner

    import decay_audit.report
    from decay_audit.cli import main

    seen = []

    def fake_render(subject, fmt, report, *, show, color, width, **context):
        seen.append((str(subject), show.value, color, width))
        return ""

    monkeypatch.setattr(decay_audit.report, "render", fake_render)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    check = ["check", str(SAMPLES / "seed.keras"), "--target", "keras", "--var-names", "bias"]
    for command in (["scan", str(SAMPLES / "seed.keras")], check):
        result = CliRunner().invoke(main, [*command, *arguments])
        assert result.exit_code == 0, result.output
    assert seen == [("scan", *expected), ("check", *expected)]


# --- baselines ------------------------------------------------------------------------------------


def test_a_baseline_accepts_todays_findings_and_reports_only_new_ones(tmp_path):
    model = tmp_path / "models" / "custom.keras"
    model.parent.mkdir()
    shutil.copy(SAMPLES / "subclassed.keras", model)
    baseline = tmp_path / "baseline.json"
    written = run_cli("scan", str(model), "--strict", "--write-baseline", str(baseline), "--format", "sarif")
    assert written.returncode == 0, written.stderr
    assert json.loads(written.stdout)["runs"][0]["results"] == []
    document = json.loads(baseline.read_text())
    assert document["version"] == 1 and {e["model"] for e in document["findings"]} == {"models/custom.keras"}
    count = len(document["findings"])
    assert count == 4 and f"wrote {count} findings" in written.stderr
    again = run_cli(
        "scan", str(model), "--strict", "--baseline", str(baseline), "--format", "sarif", cwd=tmp_path / "models"
    )
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["runs"][0]["results"] == []
    assert f"{count} findings in the baseline" in again.stderr
    assert run_cli("scan", str(model), "--strict", "--baseline", str(baseline), "-q").stderr == ""
    moved = tmp_path / "models" / "renamed.keras"  # another model: nothing of it is baselined
    shutil.copy(model, moved)
    new = run_cli("scan", str(moved), "--strict", "--baseline", str(baseline), "--format", "sarif")
    assert new.returncode == 1 and len(json.loads(new.stdout)["runs"][0]["results"]) == count
    many = run_cli("scan", str(tmp_path / "models"), "--strict", "--baseline", str(baseline), "--format", "json")
    assert many.returncode == 1 and f"{count} findings in the baseline" in many.stderr
    assert baseline.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_check_honours_a_baseline(tmp_path):
    baseline = tmp_path / "baseline.json"
    check = ["check", str(SAMPLES / "seed.keras"), "--target", "keras", "--var-names", "nothing", "--format", "json"]
    first = run_cli(*check, "--write-baseline", str(baseline))
    assert first.returncode == 0 and json.loads(first.stdout)
    kinds = {e["kind"] for e in json.loads(baseline.read_text())["findings"]}
    assert {"dead-pattern", "decayed-against-policy"} <= kinds
    assert run_cli(*check, "--baseline", str(baseline)).returncode == 0
    assert run_cli(*check, "--baseline", str(baseline), "--no-baseline").returncode == 1


def test_a_bad_baseline_is_one_line_and_nothing_is_written(tmp_path):
    bad = tmp_path / "baseline.json"
    bad.write_text('{"version": 9, "findings": []}')
    out = tmp_path / "report.json"
    result = run_cli("scan", str(SAMPLES / "seed.keras"), "--baseline", str(bad), "-o", str(out))
    _assert_one_line_error(result, str(bad), "version 9 is not supported")
    assert not out.exists()
    _assert_one_line_error(
        run_cli("scan", str(SAMPLES / "seed.keras"), "--baseline", str(tmp_path / "no.json")), "no such file"
    )


# --- [tool.decay-audit] ---------------------------------------------------------------------------


def test_pyproject_settings_apply_and_flags_override_them(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.decay-audit]\npreset = "no-bias-norm"\nstrict = true\n'
        '[tool.decay-audit.overrides]\ndecay = ["re:nothing-matches"]\n'
    )
    work = tmp_path / "deep" / "er"
    work.mkdir(parents=True)
    model = str(SAMPLES / "seed.keras")
    configured = run_cli("scan", model, "--format", "json", cwd=work)
    assert configured.returncode == 1 and "dead overrides (--strict)" in configured.stderr  # the file's dead override
    result = json.loads(configured.stdout)
    result = result.get("result", result)
    assert result["preset"] == "no-bias-norm"
    flagged = run_cli("scan", model, "--format", "json", "--preset", "ndim", "--no-strict", cwd=work)
    assert flagged.returncode == 0, flagged.stderr
    result = json.loads(flagged.stdout)
    assert result.get("result", result)["preset"] == "ndim"
    assert run_cli("scan", model, "--decay", "kind:kernel", cwd=work).returncode == 0  # replaces the file's overrides


def test_an_unknown_setting_is_one_line_naming_the_key_and_a_close_match(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.decay-audit]\nbaselin = "b.json"\n')
    for command in (["scan", str(SAMPLES / "seed.keras")], ["verify", "--setup", "train.py:make"]):
        result = run_cli(*command, cwd=tmp_path)
        _assert_one_line_error(result, str(tmp_path / "pyproject.toml"), "'baselin'", "did you mean 'baseline'?")


# --- verify's cheap checks, before TensorFlow ----------------------------------------------------

CHEAP_MISTAKES = [
    (["--setup", "train.py"], "did you mean 'train.py:make'?"),
    (["--setup", "train.py:mkae"], "has no function 'mkae' (did you mean 'make'?)"),
    (["--setup", "missing.py:make"], "missing.py: no such file"),
    (["missing.keras"], "missing.keras: no such file or directory"),
    (["--setup", "train.py:make", "--backend", "jaxx"], "did you mean 'jax'?"),
    (["--setup", "train.py:make", "--rules", "missing.json"], "missing.json: no such file"),
    (["--setup", "train.py:make", "--preset", "nope"], "--preset"),
]


def test_verify_fails_on_cheap_mistakes_without_importing_tensorflow(tmp_path):
    """Each mistake is one line and exit 2, and the process never imported TensorFlow or Keras
    (what made these take 20-30 s); the times are in benchmarks/bench_fail_fast.py."""
    (tmp_path / "train.py").write_text("import keras\n\n\ndef make():\n    raise RuntimeError('not called')\n")
    code = textwrap.dedent("""
        import sys
        from click.testing import CliRunner
        from decay_audit.cli import main
        result = CliRunner().invoke(main, ["verify", *sys.argv[1:]])
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "jax", "torch"))
        print(result.exit_code, heavy, result.output.strip().splitlines(), sep="\\n")
    """)
    import subprocess

    for arguments, fragment in CHEAP_MISTAKES:
        done = subprocess.run(
            [sys.executable, "-c", code, *arguments], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )
        exit_code, heavy, lines = done.stdout.splitlines()[:3]
        assert (exit_code, heavy) == ("2", "[]"), (arguments, done.stdout, done.stderr)
        assert fragment in lines and lines.count("decay-audit: error:") == 1, (arguments, lines)
