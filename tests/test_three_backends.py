"""The backend-neutral set-ups (``backend_cases.py``) judged the same on TensorFlow, JAX and PyTorch.

Keras fixes its backend when first imported, so each backend runs every case in ONE fresh
interpreter (``backend_cases.py`` as a script under ``KERAS_BACKEND``); the three run side by
side. Each variable's outcome and how its decay was measured must agree on all three, except
``var_names_layer``, whose ``var_names`` select other variables on TensorFlow (shared FACTS).
:func:`agreement_table` is the case x backend table the closing note quotes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import backend_cases
import pytest

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BACKENDS = ("tensorflow", "jax", "torch")
BACKEND_DEPENDENT = {"var_names_layer"}
"""Cases that select different variables per backend by design (``var_names`` on the tf.Variable name)."""


def run_everywhere() -> dict[str, dict]:
    """backend -> case -> verdict, each backend in its own interpreter, all started at once."""
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    running = {
        backend: subprocess.Popen(
            [sys.executable, str(TESTS / "backend_cases.py")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**env, "KERAS_BACKEND": backend},
        )
        for backend in BACKENDS
    }
    results = {}
    for backend, process in running.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"{backend}: {err[-3000:]}"
        results[backend] = json.loads(out.strip().splitlines()[-1])
    return results


def verdict(case: dict) -> str:
    """``ok``, or the variables that are not, with their outcome (one table cell)."""
    wrong = {path: outcome for path, outcome in case["outcomes"].items() if outcome != "ok"}
    return "ok" if not wrong else "; ".join(f"{path} {outcome}" for path, outcome in sorted(wrong.items()))


def agreement_table(results: dict[str, dict]) -> str:
    """Markdown: one row per case, one column per backend, and whether all three agree."""
    lines = ["| case | " + " | ".join(BACKENDS) + " | same |", "|" + " --- |" * (len(BACKENDS) + 2)]
    for name in backend_cases.CASES:
        cells = [verdict(results[backend][name]) for backend in BACKENDS]
        same = all(results[b][name]["outcomes"] == results[BACKENDS[0]][name]["outcomes"] for b in BACKENDS)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'yes' if same else 'no'} |")
    return "\n".join(lines)


@pytest.fixture(scope="module")
def everywhere() -> dict[str, dict]:
    return run_everywhere()


def test_each_backend_probes_on_its_own_framework(everywhere):
    for backend in BACKENDS:
        assert {case["backend"] for case in everywhere[backend].values()} == {backend}
        assert set(everywhere[backend]) == set(backend_cases.CASES)


@pytest.mark.parametrize("name", [n for n in backend_cases.CASES if n not in BACKEND_DEPENDENT])
def test_same_per_variable_verdicts_on_tensorflow_jax_and_torch(name, everywhere):
    tensorflow = everywhere["tensorflow"][name]
    for backend in ("jax", "torch"):
        assert everywhere[backend][name]["outcomes"] == tensorflow["outcomes"], (backend, name)
        assert everywhere[backend][name]["measured"] == tensorflow["measured"], (backend, name)
        assert everywhere[backend][name]["ok"] == tensorflow["ok"], (backend, name)


def test_the_cases_exercise_both_verdicts(everywhere):
    """The agreement is not vacuous: correct and broken set-ups, decoupled and coupled decay."""
    tensorflow = everywhere["tensorflow"]
    assert tensorflow["var_list_adamw"]["ok"] and not tensorflow["no_exclusions_adamw"]["ok"]
    assert tensorflow["l2_regularizer_and_adamw"]["outcomes"]["dense1/kernel"] == "double-decay"
    assert tensorflow["l2_regularizer_sgd"]["measured"]["dense1/kernel"] == "coupled"


def test_unseeded_dropout_on_torch_is_measured(everywhere):
    """An unseeded Dropout draws from torch's global generator: the probe restores it per twin, or
    every twin draws another mask and the decayed kernels read "not-decayed"."""
    case = everywhere["torch"]["dropout_adamw"]
    assert case["ok"] and case["decoupled_steps"]["dense1/kernel"] == case["steps"]


def test_var_names_naming_a_layer_select_leaves_on_jax_and_torch(everywhere):
    assert everywhere["tensorflow"]["var_names_layer"]["ok"]
    for backend in ("jax", "torch"):
        wrong = {p for p, o in everywhere[backend]["var_names_layer"]["outcomes"].items() if o != "ok"}
        assert wrong == {"layer_norm/gamma", "layer_norm/beta"}, backend


def test_a_backend_whose_framework_is_missing_is_refused_in_one_line(monkeypatch):
    """With torch installed the CLI test of this refusal skips; the same check, with torch hidden."""
    import importlib.util

    from decay_audit.errors import OptionError
    from decay_audit.probe.backends import select

    real = importlib.util.find_spec
    monkeypatch.setattr(
        select.importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a)
    )
    with pytest.raises(OptionError) as refused:
        select.trainable_backend("torch")
    assert str(refused.value) == "backend: torch is not installed: cannot probe on it (pip install torch)"


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    print(agreement_table(run_everywhere()))
