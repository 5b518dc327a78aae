"""``decay-audit scan PATH...``: files, directories (recursively) and globs, one row per model, totals."""

from __future__ import annotations

import json
import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import pytest
from conftest import REPO, SAMPLES, run_cli

from decay_audit.loaders.discover import discover
from decay_audit.schemas import load_schema
from decay_audit.stages.scan_many import scan_many


@pytest.fixture(scope="module")
def registry(tmp_path_factory) -> Path:
    """A model registry as teams keep one: nested folders, SavedModels, junk, a hidden folder."""
    root = tmp_path_factory.mktemp("registry")
    (root / "vision" / "v1").mkdir(parents=True)
    (root / "nlp").mkdir()
    (root / ".git").mkdir()
    shutil.copy(SAMPLES / "seed.keras", root / "vision" / "v1" / "seed.keras")
    shutil.copy(SAMPLES / "zoo.keras", root / "vision" / "zoo.keras")
    shutil.copy(SAMPLES / "subclassed.keras", root / "nlp" / "custom.keras")
    shutil.copy(SAMPLES / "seed.h5", root / "nlp" / "legacy.h5")
    shutil.copytree(SAMPLES / "seed_export", root / "nlp" / "exported")
    shutil.copy(SAMPLES / "seed.keras", root / ".git" / "hidden.keras")
    (root / "README.md").write_text("not a model\n")
    (root / "vision" / "notes.keras").write_text("a text file named like a model\n")
    return root


EXPECTED = ["nlp/custom.keras", "nlp/legacy.h5", "nlp/exported", "vision/zoo.keras", "vision/v1/seed.keras"]


def _relative(paths, root: Path) -> list[str]:
    return [Path(p).relative_to(root).as_posix() for p in paths]


def test_discovery_recurses_counts_savedmodels_once_and_skips_junk(registry):
    found = discover([registry])
    assert _relative(found.models, registry) == EXPECTED
    assert not found.missing
    # explicit arguments keep their order, duplicates collapse, a missing path is reported
    again = discover([registry / "vision" / "zoo.keras", registry / "vision", registry / "nope.keras"])
    assert _relative(again.models, registry) == ["vision/zoo.keras", "vision/v1/seed.keras"]
    assert again.missing == ((str(registry / "nope.keras"), "no such file or directory"),)


def test_globs_are_expanded_when_the_shell_did_not(registry):
    found = discover([str(registry / "**" / "*.keras")])
    assert _relative(found.models, registry) == ["nlp/custom.keras", "vision/v1/seed.keras", "vision/zoo.keras"]
    assert discover([str(registry / "*.nothing")]).missing


def test_special_files_are_never_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.keras")  # opening a FIFO for reading blocks until a writer comes
    shutil.copy(SAMPLES / "seed.keras", tmp_path / "seed.keras")
    (tmp_path / "loop").symlink_to(tmp_path)  # a directory cycle
    code = (
        f"from decay_audit.loaders.discover import discover; "
        f"print([p.name for p in discover([{str(tmp_path)!r}]).models])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['seed.keras']"


def test_summary_rows_and_totals_match_the_single_model_reports(registry):
    result = run_cli("scan", str(registry), "--format", "json")
    assert result.returncode == 0, result.stderr
    envelope = json.loads(result.stdout)
    jsonschema.validate(envelope, load_schema("scan-many"))
    assert envelope["command"] == "scan-many"
    document = envelope["result"]
    assert [Path(m["source"]).relative_to(registry).as_posix() for m in document["models"]] == EXPECTED
    for entry in document["models"]:
        single = json.loads(run_cli("scan", entry["source"], "--format", "json").stdout)
        jsonschema.validate(single, load_schema("scan"))
        assert entry == single["result"]  # one report per model, exactly what scan MODEL says
    totals = document["totals"]
    assert totals["models"] == 5 and totals["unreadable"] == 0 and document["errors"] == []
    assert totals["variables"] == sum(m["summary"]["variables"] for m in document["models"])
    assert totals["decayed"] == sum(m["summary"]["decayed_variables"] for m in document["models"])
    assert totals["low_confidence"] == sum(m["summary"]["low_confidence"] for m in document["models"]) > 0

    table = run_cli("scan", str(registry))
    assert table.returncode == 0 and table.stderr == ""  # no progress bar without a TTY
    lines = table.stdout.splitlines()
    total_line = next(line for line in lines if line.startswith("total (5 models)"))
    assert str(totals["variables"]) in total_line.split()
    custom = next(line for line in lines if "custom.keras" in line)
    assert custom.split()[-1] == "check"  # the custom-class model has low-confidence verdicts
    strict = run_cli("scan", str(registry), "--strict")
    assert strict.returncode == 1 and "--strict" in strict.stderr


def test_unreadable_models_get_a_row_and_exit_2_after_the_others(registry, tmp_path):
    broken = tmp_path / "broken.keras"
    broken.write_bytes((SAMPLES / "seed.keras").read_bytes()[:200])
    result = run_cli("scan", str(registry / "vision"), str(broken), str(tmp_path / "missing.h5"))
    assert result.returncode == 2
    assert "zoo.keras" in result.stdout and "seed.keras" in result.stdout
    assert "broken.keras" in result.stdout and "error:" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line]
    assert len(errors) == 2 and all(line.startswith("decay-audit: error: ") for line in errors)
    assert "missing.h5: no such file or directory" in result.stderr


def test_one_model_keeps_the_single_model_output(registry, tmp_path):
    shutil.copy(SAMPLES / "seed.keras", tmp_path / "only.keras")
    (tmp_path / "deeper").mkdir()
    by_file = run_cli("scan", str(tmp_path / "only.keras"))
    by_dir = run_cli("scan", str(tmp_path))
    assert by_file.returncode == by_dir.returncode == 0
    assert by_dir.stdout == by_file.stdout and "dense1/kernel" in by_file.stdout
    empty = tmp_path / "deeper"
    nothing = run_cli("scan", str(empty))
    assert nothing.returncode == 2 and str(empty) in nothing.stderr


def test_csv_needs_one_model(registry):
    result = run_cli("scan", str(registry), "--format", "csv")
    assert result.returncode == 2 and "csv is not available for scan-many" in result.stderr


def test_jobs_do_not_change_the_result(registry):
    models = discover([registry]).models
    one = scan_many(models, jobs=1)
    three = scan_many(models, jobs=3)
    assert [i.path for i in one.items] == [i.path for i in three.items]
    assert one.totals() == three.totals()


def test_after_tensorflow_import_one_helper_interpreter_reads_everything(registry, tmp_path, monkeypatch):
    """This test process has imported TensorFlow (conftest builds models): a per-model reader would be
    a fresh interpreter each. scan_many must not take that path at all."""
    import decay_audit.loaders._isolate as isolate

    assert "tensorflow" in sys.modules

    def per_model_interpreter(*args, **kwargs):
        raise AssertionError("one interpreter per model")

    monkeypatch.setattr(isolate, "_load_spawned", per_model_interpreter)
    broken = tmp_path / "broken.keras"
    broken.write_bytes((SAMPLES / "seed.keras").read_bytes()[:200])
    models = list(discover([registry]).models) + [broken]
    batch = scan_many(models, jobs=2)
    assert [Path(i.path) for i in batch.items] == models
    assert batch.errors[0].path == str(broken) and str(broken) in batch.errors[0].error
    document = json.loads(run_cli("scan", str(registry), "--format", "json").stdout)["result"]
    assert batch.totals().variables == document["totals"]["variables"]
    from decay_audit.report.json_format import report_dict

    assert [report_dict(r) for r in batch.reports] == document["models"]


def _run_on_tty(args: list[str], timeout: float = 120) -> tuple[int, str, str]:
    """Run the CLI with stderr on a pseudo-terminal (stdout piped): what a person at a terminal sees."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "decay_audit.cli", *args],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    os.close(follower)
    seen, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            seen += chunk
        elif process.poll() is not None:
            break
    stdout = process.communicate(timeout=timeout)[0].decode()
    os.close(leader)
    return process.returncode, stdout, seen.decode(errors="replace")


def test_progress_only_on_a_tty_and_never_with_quiet_or_json(registry):
    code, stdout, tty = _run_on_tty(["scan", str(registry)])
    assert code == 0 and "scanning" in tty and "total (5 models)" in stdout
    code, _, tty = _run_on_tty(["scan", str(registry), "--quiet"])
    assert code == 0 and tty == ""
    code, stdout, tty = _run_on_tty(["scan", str(registry), "--format", "json"])
    assert code == 0 and tty == "" and json.loads(stdout)["result"]["totals"]["models"] == 5


def test_verify_progress_only_on_a_tty_and_never_with_quiet(tmp_path):
    setup = tmp_path / "train.py"
    setup.write_text(
        "import keras\n\n\n"
        "def make():\n"
        "    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, name='head')])\n"
        "    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)\n"
        "    optimizer.exclude_from_weight_decay(var_names=['bias'])\n"
        "    model.compile(optimizer=optimizer, loss='mse')\n"
        "    return model\n"
    )
    code, stdout, tty = _run_on_tty(["verify", "--setup", f"{setup}:make", "--steps", "4"])
    assert code == 0 and "head/kernel" in stdout
    assert "probing" in tty and "4/4" in tty  # one tick per probe step, closed before the report
    code, stdout, tty = _run_on_tty(["verify", "--setup", f"{setup}:make", "--steps", "4", "--quiet"])
    assert code == 0 and "head/kernel" in stdout and "probing" not in tty
