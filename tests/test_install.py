"""What a user gets from ``pip install decay-audit`` with no extra, and on platforms without
``fork`` or ``resource``: scan, rules and check work without TensorFlow, Keras or pandas; verify
says in one line what to install; a read without a forked child still gives the same answers and
the same one-line errors (docs/install.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SAMPLES, run_cli

import decay_audit.loaders._isolate as isolate
from decay_audit.errors import LimitExceededError, ModelLoadError, OptionError
from decay_audit.loaders.interface import Limits
from decay_audit.probe.backends import select

ZOO = str(SAMPLES / "zoo.keras")
HINT = (
    "decay-audit: error: --backend: tensorflow is not installed: cannot probe on it (pip install 'decay-audit[verify]')"
)


def _clean_env() -> dict[str, str]:
    """This environment without what would let a venv see the dev environment's packages."""
    drop = {"PYTHONPATH", "PIP_NO_DEPS", "VIRTUAL_ENV", "KERAS_BACKEND", "PYTHONHOME"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "TF_CPP_MIN_LOG_LEVEL": "3"}


@pytest.fixture(scope="module")
def light_venv(tmp_path_factory) -> Path:
    """A fresh venv with ``pip install <this checkout>``: the declared dependencies, no extra.
    Built from a copy, so setuptools' in-tree build writes nothing into the working tree."""
    root = tmp_path_factory.mktemp("light-install")
    source = root / "decay-audit"
    ignore = shutil.ignore_patterns(
        ".venv", ".git", "__pycache__", "*.egg-info", "build", "dist", ".hypothesis", ".pytest_cache"
    )
    shutil.copytree(REPO, source, ignore=ignore)
    for heavy in ("sample_models", "tests", "benchmarks"):  # not part of the package
        shutil.rmtree(source / heavy, ignore_errors=True)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    installed = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
        env=_clean_env(),
        timeout=900,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


def _in_venv(venv: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(venv / "bin" / "decay-audit"), *args],
        capture_output=True,
        text=True,
        cwd=venv.parent,
        env=_clean_env(),
        timeout=300,
    )


@pytest.mark.slow
def test_light_install_has_no_tensorflow_keras_or_pandas(light_venv):
    probe = (
        "import importlib.util as u; print(' '.join(m for m in ('tensorflow', 'keras', 'pandas') if u.find_spec(m)))"
    )
    found = subprocess.run(
        [str(light_venv / "bin" / "python"), "-c", probe], capture_output=True, text=True, env=_clean_env(), check=True
    )
    assert found.stdout.strip() == ""
    imported = subprocess.run(
        [str(light_venv / "bin" / "python"), "-c", "import tensorflow"], capture_output=True, env=_clean_env()
    )
    assert imported.returncode != 0


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, code",
    [
        (("scan", ZOO), 0),
        (("rules", ZOO, "--target", "native"), 0),
        (("check", ZOO, "--target", "keras", "--var-names", "bias"), 1),  # bias excludes too little: findings
    ],
    ids=["scan", "rules", "check"],
)
def test_light_install_scans_writes_rules_and_checks_as_the_full_one(light_venv, args, code):
    light = _in_venv(light_venv, *args)
    full = run_cli(*args)
    assert (light.returncode, full.returncode) == (code, code), light.stderr
    assert light.stdout == full.stdout and light.stdout.strip()
    assert light.stderr == ""


@pytest.mark.slow
def test_light_install_verify_says_what_to_install(light_venv):
    for args in (("verify", "--setup", "train.py:make"), ("verify", ZOO)):
        result = _in_venv(light_venv, *args)
        assert result.returncode == 2
        assert result.stderr.splitlines() == [HINT]
        assert result.stdout == ""


def test_verify_names_the_extra_when_keras_is_missing(monkeypatch):
    present = select.importlib.util.find_spec

    def without_keras(name, *args):
        return None if name == "keras" else present(name, *args)

    monkeypatch.setattr(select.importlib.util, "find_spec", without_keras)
    with pytest.raises(OptionError) as refused:
        select.choose_backend("tensorflow")
    assert refused.value.subject == "backend"
    assert refused.value.problem == "keras is not installed: verify runs Keras 3 (pip install 'decay-audit[verify]')"


# ---- platforms without fork or resource (Windows; macOS for the memory cap) -------------------


def _simulated(missing: str, *args: str) -> subprocess.CompletedProcess:
    """``decay-audit ARGS`` in a fresh interpreter that lacks ``resource`` and/or ``os.fork``, as
    Windows does, set before decay_audit is imported."""
    takes = {"resource": "sys.modules['resource'] = None", "fork": "del os.fork"}
    code = "; ".join(
        ["import os, sys", *(takes[m] for m in missing.split("+")), "from decay_audit.cli import main", "main()"]
    )
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )


@pytest.mark.parametrize("missing", ["resource+fork", "fork", "resource"])
def test_without_fork_or_resource_a_scan_prints_the_same_table(missing):
    normal = run_cli("scan", ZOO)
    simulated = _simulated(missing, "scan", ZOO)
    assert normal.returncode == simulated.returncode == 0, simulated.stderr
    assert simulated.stdout == normal.stdout
    assert simulated.stderr == ""


def _truncated(tmp_path: Path, name: str, keep: int) -> Path:
    path = tmp_path / name
    path.write_bytes((SAMPLES / name).read_bytes()[:keep])
    return path


@pytest.mark.parametrize("name, keep", [("zoo.keras", 300), ("seed.h5", 4096)])
def test_without_fork_or_resource_a_corrupt_file_is_one_error_line(tmp_path, name, keep):
    corrupt = str(_truncated(tmp_path, name, keep))
    normal = run_cli("scan", corrupt)
    simulated = _simulated("resource+fork", "scan", corrupt)
    assert simulated.returncode == normal.returncode == 2
    assert len(simulated.stderr.splitlines()) == 1
    assert simulated.stderr.startswith(f"decay-audit: error: {corrupt}: ")
    assert simulated.stderr == normal.stderr
    assert simulated.stdout == ""


def test_without_fork_the_read_runs_in_this_process(monkeypatch):
    """No child: the loader's side effect is visible here (a forked child's would not be)."""
    monkeypatch.delattr(os, "fork")
    seen: list[Path] = []

    def loader(path: Path, limits: Limits):
        seen.append(path)
        from decay_audit.loaders.keras_zip import load_keras_zip

        return load_keras_zip(path, limits)

    inventory = isolate.load_isolated(loader, Path(ZOO), Limits())
    assert seen == [Path(ZOO)] and inventory.records
    assert isolate.unenforced_limits() == (isolate.NO_MEMORY_CAP, isolate.NO_TIME_LIMIT, isolate.NO_CRASH_ISOLATION)


def test_in_process_read_reports_failures_as_one_line_errors():
    def broken(path: Path, limits: Limits):
        raise ValueError("a corrupt heap\nsecond line")

    def exhausted(path: Path, limits: Limits):
        raise MemoryError

    with pytest.raises(ModelLoadError) as unreadable:
        isolate.read_in_process(broken, Path("m.h5"), Limits())
    assert unreadable.value.subject == "m.h5"
    assert unreadable.value.problem == "unreadable (ValueError: a corrupt heap)"
    with pytest.raises(LimitExceededError) as memory:
        isolate.read_in_process(exhausted, Path("m.h5"), Limits())
    assert "no address-space cap on this platform" in memory.value.problem


def test_linux_keeps_every_limit(monkeypatch):
    if not sys.platform.startswith("linux"):
        pytest.skip("the full set of limits is a Linux promise")
    assert isolate.unenforced_limits() == ()

    code = (
        "from pathlib import Path\n"
        "from decay_audit.errors import DecayAuditError\n"
        "from decay_audit.loaders._isolate import load_isolated\n"
        "from decay_audit.loaders.interface import Limits\n"
        "try:\n"
        "    load_isolated(lambda path, limits: bytearray(4 << 30), Path('m.h5'), Limits(max_memory_mib=512))\n"
        "except DecayAuditError as exc:\n"
        "    print(exc)\n"
    )  # a fresh interpreter: this one has imported TensorFlow, and the child must be forked
    capped = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert capped.stdout.strip() == "m.h5: reading needed more than 512 MiB (raise it with --limit memory-mib=N)"
    monkeypatch.setattr(isolate, "_resource", None)
    assert isolate.unenforced_limits() == (isolate.NO_MEMORY_CAP,)
    assert isolate._cap_address_space(1024) is False  # noted, not raised: the read goes on uncapped


def test_on_macos_the_cap_is_not_tried(monkeypatch):
    """macOS raises ValueError for RLIMIT_AS (or ignores it): a forked read goes on uncapped, not failing."""
    if isolate._resource is None:
        pytest.skip("no resource module here")
    calls: list[tuple] = []
    monkeypatch.setattr(isolate._resource, "setrlimit", lambda *args: calls.append(args))
    monkeypatch.setattr(isolate.sys, "platform", "darwin")
    assert isolate._cap_address_space(1024) is False and calls == []
    assert isolate.unenforced_limits() == (isolate.NO_MEMORY_CAP,)
