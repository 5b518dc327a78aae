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
    assert document["summary"]["variables"] == len(document["variables"]) > 0
    assert sum(k["variables"] for k in document["summary"]["per_kind"]) == document["summary"]["variables"]
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
    document = json.loads(result.stdout)
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
