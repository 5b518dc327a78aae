"""The GitHub Action, its example workflow and the pre-commit hooks: parsed, checked against the
real CLI, and run (the action's script locally, the hooks with ``pre-commit try-repo``)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SAMPLES

from decay_audit.cli import main as cli
from decay_audit.integrations.precommit import check_commands, is_policy_file

ACTION = yaml.safe_load((REPO / "action.yml").read_text())
WORKFLOW = yaml.safe_load((REPO / "docs" / "github-workflow-example.yml").read_text())
HOOKS = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
AUDIT_STEP = next(step for step in ACTION["runs"]["steps"] if step.get("id") == "audit")


def _parse_cli(args: list[str]) -> None:
    """Parse like ``decay-audit ARGS`` would, without running: unknown options or choices raise."""
    name, rest = args[0], args[1:]
    assert name in cli.commands, f"decay-audit has no command {name!r}"
    cli.commands[name].make_context(name, list(rest))


def _decay_audit_lines(script: str) -> list[list[str]]:
    """The ``decay-audit ...`` invocations of a shell script, variables filled with sample values."""
    values = {
        r'"\$\{models\[@\]\}"': "models/",
        r'"\$\{intent\[@\]\}"': "--preset no-bias-norm",
        r'"\$\{CHECK_MODEL:-\$\{models\[0\]\}\}"': "m.keras",
        r'"\$OUT/([a-z]+\.sarif)"': r"out/\1",
        r'"\$TARGET"': "keras",
        r'"\$RULES"': "rules.json",
        r'"\$SETUP"': "train.py:make",
        r'\$\{(scan|check|verify)_args\[@\]\+"\$\{\1_args\[@\]\}"\}': "",  # pass-through, empty by default
    }
    commands = []
    for line in script.splitlines():
        line = line.strip()
        if not line.startswith("decay-audit "):
            continue
        line = re.split(r"\s(?:\|\||>)\s", line)[0]
        for pattern, value in values.items():
            line = re.sub(pattern, value, line)
        assert "$" not in line, f"unhandled shell variable in {line!r}"
        commands.append(shlex.split(line)[1:])
    return commands


def test_action_inputs_referenced_exist_and_commands_are_real():
    inputs = ACTION["inputs"]
    text = (REPO / "action.yml").read_text()
    referenced = set(re.findall(r"inputs\.([A-Za-z0-9_-]+)", text))
    assert referenced and referenced <= set(inputs), referenced - set(inputs)
    assert set(inputs) <= referenced, f"inputs nobody uses: {set(inputs) - referenced}"
    for name, spec in inputs.items():
        assert spec.get("description"), name
        assert spec.get("required") or "default" in spec, f"optional input {name} needs a default"
    assert ACTION["runs"]["using"] == "composite"
    for step in ACTION["runs"]["steps"]:
        assert "uses" in step or step.get("shell") == "bash"  # composite run steps must name a shell
    commands = _decay_audit_lines(AUDIT_STEP["run"])
    assert [c[0] for c in commands] == ["scan", "check", "verify"]
    for command in commands:
        _parse_cli(command)
        assert command[command.index("--format") + 1] == "sarif"
        assert "--strict" not in command  # only when the user passes it (scan-args, check-args, verify-args)
    setup_python = next(step for step in ACTION["runs"]["steps"] if "setup-python" in step.get("uses", ""))
    assert inputs["python-version"]["default"] == "" and "inputs.python-version != ''" in setup_python["if"]
    steps_ids = set(re.findall(r"steps\.([a-z-]+)\.outputs", text))
    assert steps_ids <= {s.get("id") for s in ACTION["runs"]["steps"]}


def test_example_workflow_uses_the_action_with_its_inputs():
    steps = WORKFLOW["jobs"]["decay-audit"]["steps"]
    step = next(s for s in steps if "decay-audit" in s.get("uses", ""))
    given = set(step["with"])
    assert given <= set(ACTION["inputs"]), given - set(ACTION["inputs"])
    required = {name for name, spec in ACTION["inputs"].items() if spec.get("required")}
    assert required <= given
    assert WORKFLOW["permissions"]["security-events"] == "write"  # upload-sarif needs it
    assert re.fullmatch(r"[^:]+\.py:[A-Za-z_]\w*", step["with"]["setup"])


def _shim(tmp_path: Path) -> Path:
    """A ``decay-audit`` executable for this checkout (as pip would install it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    shim = bin_dir / "decay-audit"
    shim.write_text(
        f'#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} exec {shlex.quote(sys.executable)} -m decay_audit.cli "$@"\n'
    )
    shim.chmod(0o755)
    return bin_dir


def _run_audit_step(tmp_path: Path, **inputs: str) -> tuple[subprocess.CompletedProcess, dict]:
    values = {name: str(spec.get("default", "")) for name, spec in ACTION["inputs"].items()}
    values.update(inputs)
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "GITHUB_OUTPUT": str(tmp_path / "github_output"),
    }
    values["steps.install.outputs.bin"] = str(_shim(tmp_path))  # what the install step reports
    for name, expression in AUDIT_STEP["env"].items():
        env[name] = re.sub(r"\$\{\{\s*(?:inputs\.)?([A-Za-z0-9_.-]+)\s*\}\}", lambda m: values[m.group(1)], expression)
    result = subprocess.run(
        ["bash", "-e", "-c", AUDIT_STEP["run"]], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    outputs = dict(line.split("=", 1) for line in (tmp_path / "github_output").read_text().split())
    return result, outputs


def test_action_script_runs_and_writes_one_sarif_per_command(tmp_path):
    (tmp_path / "models").mkdir()
    shutil.copy(SAMPLES / "zoo.keras", tmp_path / "models" / "zoo.keras")
    shutil.copy(SAMPLES / "seed.keras", tmp_path / "models" / "seed.keras")
    (tmp_path / "rules.json").write_text(json.dumps({"exclude_var_names": ["LayerNorm"]}))
    result, outputs = _run_audit_step(
        tmp_path, models="models/", rules="rules.json", target="keras", **{"check-model": "models/zoo.keras"}
    )
    assert result.returncode == 0, result.stderr
    assert outputs["exit-code"] == "1"  # the rule is dead: check found something
    logs = sorted(p.name for p in (tmp_path / "decay-audit-sarif").iterdir())
    assert logs == ["check.sarif", "scan.sarif"]
    check = json.loads((tmp_path / "decay-audit-sarif" / "check.sarif").read_text())
    assert check["runs"][0]["automationDetails"]["id"] == "decay-audit/check/"
    assert {r["ruleId"] for r in check["runs"][0]["results"]} >= {"DA001"}
    scan = json.loads((tmp_path / "decay-audit-sarif" / "scan.sarif").read_text())
    assert len(scan["runs"][0]["artifacts"]) == 2 and scan["runs"][0]["results"] == []

    clean, outputs = _run_audit_step(tmp_path, models="models/seed.keras")
    assert clean.returncode == 0 and outputs["exit-code"] == "0"
    broken, outputs = _run_audit_step(tmp_path, models="models/missing.keras", rules="rules.json")
    assert outputs["exit-code"] == "2"
    assert all(p.stat().st_size > 0 for p in (tmp_path / "decay-audit-sarif").iterdir())  # no empty logs to upload


def test_action_passes_extra_arguments_through_and_adds_no_strict_of_its_own(tmp_path):
    (tmp_path / "models").mkdir()
    shutil.copy(SAMPLES / "subclassed.keras", tmp_path / "models" / "custom.keras")  # low-confidence verdicts
    default, _ = _run_audit_step(tmp_path, models="models/custom.keras")
    assert "(--strict)" not in default.stdout + default.stderr
    strict, outputs = _run_audit_step(tmp_path, models="models/custom.keras", **{"scan-args": "--strict"})
    assert outputs["exit-code"] == "1", strict.stdout + strict.stderr
    assert "(--strict)" in strict.stderr


INSTALL_STEP = next(step for step in ACTION["runs"]["steps"] if step.get("id") == "install")


def _run_install_step(tmp_path: Path, setup: str) -> tuple[list[str], str]:
    """The install step with ``python`` standing in for the job's: ``python -m ...`` is recorded, not
    run (no package index needed), anything else goes to this interpreter."""
    bin_dir = tmp_path / "job-bin"
    bin_dir.mkdir(exist_ok=True)
    log = tmp_path / "python-m.log"
    log.unlink(missing_ok=True)
    fake = bin_dir / "python"
    fake.write_text(
        f'#!/bin/sh\nif [ "$1" = "-m" ]; then echo "$@" >> {shlex.quote(str(log))}; exit 0; fi\n'
        f'exec {shlex.quote(sys.executable)} "$@"\n'
    )
    fake.chmod(0o755)
    action_path = str(tmp_path / "action")
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "ACTION_PATH": action_path,
        "SETUP": setup,
        "GITHUB_OUTPUT": str(tmp_path / "install_output"),
    }
    assert set(INSTALL_STEP["env"]) == {"ACTION_PATH", "SETUP"}
    assert INSTALL_STEP["env"]["ACTION_PATH"] == "${{ github.action_path }}"
    assert INSTALL_STEP["env"]["SETUP"] == "${{ inputs.setup }}"
    subprocess.run(["bash", "-e", "-c", INSTALL_STEP["run"]], env=env, check=True, capture_output=True, timeout=60)
    output = dict(line.split("=", 1) for line in (tmp_path / "install_output").read_text().split())
    return log.read_text().splitlines(), output["bin"]


def test_action_installs_its_own_code_with_only_the_extras_the_commands_need(tmp_path):
    pip_scan, bin_dir = _run_install_step(tmp_path, setup="")
    action_path = str(tmp_path / "action")
    assert pip_scan == [f"-m pip install --quiet --disable-pip-version-check {action_path}"]  # no TensorFlow
    assert Path(bin_dir) == Path(sys.executable).parent  # the job's Python: this venv, not a new one
    pip_verify, _ = _run_install_step(tmp_path, setup="train.py:make")
    assert pip_verify == [f"-m pip install --quiet --disable-pip-version-check {action_path}[verify]"]
    assert re.search(r"(?m)^verify = \[", (REPO / "pyproject.toml").read_text())  # the extra the step names


def test_hooks_are_declared_with_real_commands():
    by_id = {hook["id"]: hook for hook in HOOKS}
    assert set(by_id) == {"decay-audit-scan", "decay-audit-check"}
    scan = shlex.split(by_id["decay-audit-scan"]["entry"])
    assert scan[0] == "decay-audit"
    _parse_cli(scan[1:] + ["model.keras"])
    _parse_cli(scan[1:] + ["--strict", "model.keras"])  # what a user's args: [--strict] makes of it
    assert "--strict" not in scan  # the user's choice, through args
    for name in ("m.keras", "dir/m.h5", "export/saved_model.pb"):
        assert re.search(by_id["decay-audit-scan"]["files"], name), name
    assert not re.search(by_id["decay-audit-scan"]["files"], "train.py")
    check = shlex.split(by_id["decay-audit-check"]["entry"])
    assert check[:3] == ["python", "-m", "decay_audit.integrations.precommit"]
    for hook in HOOKS:
        assert hook["language"] == "python" and hook["name"]


def test_precommit_check_pairs_rules_and_policies(tmp_path):
    policy = tmp_path / "decay_policy.yaml"
    policy.write_text("preset: no-bias-norm\noverrides:\n  - {action: no-decay, select: 'kind:embedding'}\n")
    rules = tmp_path / "decay_rules.json"
    rules.write_text(json.dumps({"exclude_var_names": ["bias"]}))
    assert is_policy_file(policy) and not is_policy_file(rules)
    only_policy = check_commands(["m.keras"], "keras", [str(policy)], rules=str(rules))
    assert only_policy == [["check", "m.keras", "--target", "keras", "--rules", str(rules), "--policy", str(policy)]]
    only_rules = check_commands(["m.keras"], "keras", [str(rules)], preset="ndim")
    assert only_rules == [["check", "m.keras", "--target", "keras", "--rules", str(rules), "--preset", "ndim"]]
    for command in only_policy + only_rules:
        _parse_cli(command)


PRE_COMMIT = shutil.which("pre-commit") or (shutil.which("pre-commit", path=str(Path(sys.executable).parent)))


@pytest.mark.slow
@pytest.mark.skipif(PRE_COMMIT is None or shutil.which("git") is None, reason="needs pre-commit and git")
def test_pre_commit_try_repo_runs_both_hooks(tmp_path):
    """pre-commit builds the hooks' environment itself, from the package index, as on a user's
    machine: the light install (no TensorFlow, Keras or pandas), a few seconds instead of minutes."""
    work = tmp_path / "project"
    (work / "models").mkdir(parents=True)
    (work / "training").mkdir()
    shutil.copy(SAMPLES / "seed.keras", work / "models" / "seed.keras")
    shutil.copy(SAMPLES / "subclassed.keras", work / "models" / "custom.keras")
    (work / "training" / "decay_rules.json").write_text(json.dumps({"exclude_var_names": ["dense2"]}))
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(git + ["add", "-A"], cwd=work, check=True)
    drop = {"PYTHONPATH", "PIP_NO_DEPS", "VIRTUAL_ENV"}
    env = {
        **{k: v for k, v in os.environ.items() if k not in drop},
        "PRE_COMMIT_HOME": str(tmp_path / "cache"),
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }

    shadow, rev = _shadow_commit(REPO, tmp_path)  # try-repo reads a commit: the hooks file may be uncommitted

    def pre_commit(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PRE_COMMIT, *args], cwd=work, env=env, capture_output=True, text=True, timeout=600)

    scan = pre_commit("try-repo", str(shadow), "decay-audit-scan", "--ref", rev, "--all-files", "--verbose")
    assert "custom.keras" in scan.stdout and "seed.keras" in scan.stdout, scan.stdout + scan.stderr
    assert "(--strict)" not in scan.stdout  # the hook adds no --strict of its own
    # args come from a config (try-repo takes none): --strict for scan, the model for check
    config = work / ".pre-commit-config.yaml"
    hooks = [
        {"id": "decay-audit-scan", "args": ["--strict"]},
        {"id": "decay-audit-check", "args": ["--model", "models/seed.keras", "--target", "keras"]},
    ]
    config.write_text(yaml.safe_dump({"repos": [{"repo": str(shadow), "rev": rev, "hooks": hooks}]}))
    subprocess.run(git + ["add", "-A"], cwd=work, check=True)
    strict = pre_commit("run", "decay-audit-scan", "--all-files", "--verbose")
    assert strict.returncode == 1, strict.stdout + strict.stderr  # the custom-class model has low-confidence verdicts
    assert "low-confidence or conflicting verdicts or dead overrides in 2 models (--strict)" in strict.stdout
    checked = pre_commit("run", "decay-audit-check", "--all-files", "--verbose")
    assert checked.returncode == 1, checked.stdout + checked.stderr
    assert "over-broad" in checked.stdout and "dense2" in checked.stdout  # 'dense2' also excludes its kernel
    (work / "models" / "custom.keras").unlink()
    subprocess.run(git + ["add", "-A"], cwd=work, check=True)
    assert pre_commit("run", "decay-audit-scan", "--all-files").returncode == 0

    environments = list((tmp_path / "cache").glob("repo*/py_env-*/lib/python*/site-packages"))
    assert len(environments) == 1  # both hooks share the one environment
    installed = {p.name.lower() for p in environments[0].iterdir()}
    assert {"h5py", "numpy", "decay_audit"} <= installed
    assert not installed & {"tensorflow", "keras", "pandas"}


def _shadow_commit(repo: Path, tmp_path: Path) -> tuple[Path, str]:
    """A commit holding the working tree's hook files (pre-commit reads a rev, not a work tree)."""
    shadow = tmp_path / "shadow"
    shutil.copytree(repo, shadow, ignore=shutil.ignore_patterns(".venv", "__pycache__", "*.egg-info", "build"))
    git = ["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "commit.gpgsign=false"]
    if (shadow / ".git").is_dir():
        shutil.rmtree(shadow / ".git")
    (shadow / ".git").unlink(missing_ok=True)  # a worktree's .git is a file pointing elsewhere
    subprocess.run(["git", "init", "-q"], cwd=shadow, check=True)
    subprocess.run(git + ["add", "-A"], cwd=shadow, check=True)
    subprocess.run(git + ["commit", "-q", "-m", "shadow"], cwd=shadow, check=True)
    return shadow, subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=shadow, capture_output=True, text=True, check=True
    ).stdout.strip()
