"""``decay_audit.verify``: the intent (policy, rules, --expect globs) against the probe's measurements."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from decay_audit.errors import UsageError
from decay_audit.policy import Policy, Preset
from decay_audit.probe.setup import SetupError, Stage, TrainingSetup, at_stage, load_setup, setup_from_object
from decay_audit.probe.verdict import Measurement, Outcome, judge


@dataclass(frozen=True)
class VerifyReport:
    setup: str
    optimizer: str
    weight_decay: float | None
    steps: int
    device: str
    measurements: tuple[Measurement, ...]
    notes: tuple[str, ...] = ()
    dead_selectors: tuple[str, ...] = ()
    """Intent rules (--decay/--no-decay overrides, --expect-decay/--expect-no-decay globs) that matched no
    variable: the intent they were written for is not being checked (as scan and check report them)."""
    backend: str = "tensorflow"
    """The probe backend that ran the set-up's steps (decay_audit.probe.backends.BACKENDS)."""
    decay_sources: tuple[str, ...] = ()
    """Every decay knob found and switched in the twins (``AdamW weight_decay=0.01``, regularizers)."""

    @property
    def mismatches(self) -> tuple[Measurement, ...]:
        return tuple(m for m in self.measurements if not m.ok)

    @property
    def ok(self) -> bool:
        return not self.mismatches


@dataclass(frozen=True)
class Intent:
    """What each trainable variable should receive, and which rule said so."""

    expected: dict[str, tuple[bool, str]]
    """path -> (decay expected, the rule that decided it: preset and kind, an override, a rule file, a glob)."""
    dead_selectors: tuple[str, ...]
    """Rules that matched no variable."""


def _intent(setup: TrainingSetup, policy: Policy, rules: Path | None, expect_decay: Sequence[str],
            expect_no_decay: Sequence[str], ordered: Sequence[tuple[bool, str]] = ()) -> Intent:
    from decay_audit.audit import scan_inventory
    from decay_audit.loaders.live import load_live

    report = scan_inventory(load_live(setup.model), policy)
    intent = {v.record.path: (v.decision.decay, v.decision.reason) for v in report.variables}
    dead = list(report.policy_findings.dead_overrides)
    if rules is not None:
        from decay_audit.rules import get_target
        from decay_audit.rules.files import read_structured

        native = get_target("native")
        document = native.parse(read_structured(rules), str(rules))
        native.apply(document, [v.record for v in report.variables])  # raises on a fingerprint mismatch
        intent = {v["path"]: (bool(v["decay"]), f"rule file {rules}") for v in document["variables"]}
    globs = list(ordered) or [(True, g) for g in expect_decay] + [(False, g) for g in expect_no_decay]
    for decay, pattern in globs:  # later ones win
        rule = f"--expect-{'decay' if decay else 'no-decay'} {pattern}"
        matched = False
        for path in intent:
            if fnmatch.fnmatchcase(path, pattern):
                intent[path] = (decay, rule)
                matched = True
        if not matched:
            dead.append(rule)
    return Intent(intent, tuple(dict.fromkeys(dead)))


def verify(setup: Any, *, steps: int = 3, preset: Policy | Preset | str = Preset.KERNELS_ONLY,
           rules: str | Path | None = None, expect_decay: Sequence[str] = (), expect_no_decay: Sequence[str] = (),
           device: str | None = None, batch_size: int = 4, seed: int = 0,
           ordered_expectations: Sequence[tuple[bool, str]] = (),
           on_step: Callable[[int, int], None] | None = None) -> VerifyReport:
    """Measure what the set-up's optimizer and loss do to every trainable variable.

    ``setup``: a compiled keras.Model, a (model, optimizer) pair, a mapping with ``model``,
    ``optimizer`` and optionally ``optimizers``, ``train_step``, ``data_loss`` and the set-up's own
    ``batch`` / ``dataset``, or ``"file.py:make"``. A set-up that cannot be probed raises
    :class:`SetupError` whose ``stage`` says where (import, make(), batch, step, measurement): a
    crash is never returned as a mismatch.
    ``expect_decay`` globs apply before ``expect_no_decay``; ``ordered_expectations``
    ((decay, glob) pairs, later ones winning) replaces both when given.
    ``on_step(done, total)`` is called after each probe step (the CLI's progress bar).
    The model's weights and optimizer state are restored afterwards.
    """
    from decay_audit.probe.data import BatchSource
    from decay_audit.probe.twin import run_probe

    if isinstance(setup, str) and ":" in setup and setup.split(":")[0].endswith(".py"):
        training = load_setup(setup)
    else:
        training = setup_from_object(setup, _describe(setup))
    policy = preset if isinstance(preset, Policy) else Policy(Preset(preset))
    if device not in (None, "cpu", "gpu"):
        raise UsageError("--device", f"expected cpu or gpu, got {device!r}")
    device_name = {"cpu": "CPU", "gpu": "GPU", None: None}[device]
    if device_name == "GPU":
        from decay_audit.probe.backends.select import gpu_visible

        if not gpu_visible():
            raise UsageError("--device", "gpu requested but the backend sees no GPU")
    subject = training.description or str(getattr(training.model, "name", "model"))
    batches = BatchSource(training, batch_size, np.random.default_rng(seed))
    weights = getattr(training.model, "weights", None)
    if getattr(training.model, "built", True) is False or (weights is not None and not weights):
        x, _ = batches.peek()  # a subclassed model never called: build it the way training would
        with at_stage(Stage.STEP, subject):
            training.model(x, training=False)
    with at_stage(Stage.MEASUREMENT, subject):
        intent = _intent(training, policy, Path(rules) if rules else None, expect_decay, expect_no_decay,
                         ordered_expectations)
        run = run_probe(training, steps=steps, batch_size=batch_size, seed=seed, device=device_name,
                        batches=batches, on_step=on_step)
        measurements = judge(run, intent.expected)
    notes = []
    if not run.sources and not any(m.coupled_steps for m in measurements):
        notes.append("the optimizer has no weight_decay and no penalty reached any variable: nothing is decayed")
    notes.extend(run.notes)
    if training.batch is not None:
        notes.append("batches: the set-up's own")
    return VerifyReport(
        setup=subject, optimizer=run.optimizer_name, weight_decay=run.weight_decay, steps=len(run.steps),
        device=run.device, measurements=tuple(measurements), notes=tuple(notes),
        dead_selectors=intent.dead_selectors, backend=run.backend,
        decay_sources=tuple(s.label for s in run.sources),
    )


def _describe(setup: Any) -> str:
    model = setup.get("model") if isinstance(setup, dict) else setup[0] if isinstance(setup, tuple) and setup \
        else setup
    return str(getattr(model, "name", None) or type(setup).__name__)


__all__ = ["Outcome", "SetupError", "Stage", "VerifyReport", "verify"]
