"""``decay_audit.verify``: the intent (policy, rules, --expect globs) against the probe's measurements."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decay_audit.errors import UsageError
from decay_audit.policy import Policy, Preset
from decay_audit.probe.setup import TrainingSetup, load_setup, setup_from_object
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


def _intent(setup: TrainingSetup, policy: Policy, rules: Path | None, expect_decay: Sequence[str],
            expect_no_decay: Sequence[str], ordered: Sequence[tuple[bool, str]] = ()) -> dict[str, tuple[bool, str]]:
    from decay_audit.audit import scan_inventory
    from decay_audit.loaders.live import load_live

    report = scan_inventory(load_live(setup.model), policy)
    intent = {v.record.path: (v.decision.decay, f"{v.classification.kind.value} under {policy.describe()}")
              for v in report.variables}
    if rules is not None:
        from decay_audit.rules import get_target
        from decay_audit.rules.files import read_structured

        native = get_target("native")
        document = native.parse(read_structured(rules), str(rules))
        native.apply(document, [v.record for v in report.variables])  # raises on a fingerprint mismatch
        intent = {v["path"]: (bool(v["decay"]), f"rule file {rules}") for v in document["variables"]}
    globs = list(ordered) or [(True, g) for g in expect_decay] + [(False, g) for g in expect_no_decay]
    for decay, pattern in globs:  # later ones win
        for path in intent:
            if fnmatch.fnmatchcase(path, pattern):
                intent[path] = (decay, f"--expect-{'decay' if decay else 'no-decay'} {pattern}")
    return intent


def verify(setup: Any, *, steps: int = 3, preset: Policy | Preset | str = Preset.KERNELS_ONLY,
           rules: str | Path | None = None, expect_decay: Sequence[str] = (), expect_no_decay: Sequence[str] = (),
           device: str | None = None, batch_size: int = 4, seed: int = 0,
           ordered_expectations: Sequence[tuple[bool, str]] = ()) -> VerifyReport:
    """Measure what the set-up's optimizer and loss do to every trainable variable.

    ``setup``: a compiled keras.Model, a (model, optimizer) pair, a mapping with ``model``,
    ``optimizer`` and optionally ``train_step`` / ``data_loss``, or ``"file.py:make"``.
    ``expect_decay`` globs apply before ``expect_no_decay``; ``ordered_expectations``
    ((decay, glob) pairs, later ones winning) replaces both when given.
    The model's weights and optimizer state are restored afterwards.
    """
    from decay_audit.probe.backends.tensorflow import inner_optimizer, top_level_optimizers
    from decay_audit.probe.twin import run_probe

    if isinstance(setup, str) and ":" in setup and setup.split(":")[0].endswith(".py"):
        training = load_setup(setup)
    else:
        training = setup_from_object(setup, getattr(setup, "name", type(setup).__name__))
    policy = preset if isinstance(preset, Policy) else Policy(Preset(preset))
    if device not in (None, "cpu", "gpu"):
        raise UsageError("--device", f"expected cpu or gpu, got {device!r}")
    device_name = {"cpu": "CPU", "gpu": "GPU", None: None}[device]
    if device_name == "GPU":
        from decay_audit.probe.backends.select import gpu_visible

        if not gpu_visible():
            raise UsageError("--device", "gpu requested but the backend sees no GPU")
    accumulation = max([getattr(inner_optimizer(o), "gradient_accumulation_steps", None) or 1
                        for o in top_level_optimizers(training)] or [1])
    steps = max(steps, 2 * accumulation)  # decay happens only on the steps that update
    intent = _intent(training, policy, Path(rules) if rules else None, expect_decay, expect_no_decay,
                     ordered_expectations)
    run = run_probe(training, steps=steps, batch_size=batch_size, seed=seed, device=device_name)
    measurements = judge(run, intent)
    notes = []
    if not run.sources and not any(m.coupled_steps for m in measurements):
        notes.append("the optimizer has no weight_decay and no penalty reached any variable: nothing is decayed")
    notes.extend(run.notes)
    return VerifyReport(
        setup=training.description or str(getattr(training.model, "name", "model")),
        optimizer=run.optimizer_name, weight_decay=run.weight_decay, steps=len(run.steps), device=run.device,
        measurements=tuple(measurements), notes=tuple(notes), backend=run.backend,
        decay_sources=tuple(s.label for s in run.sources),
    )


__all__ = ["Outcome", "VerifyReport", "verify"]
