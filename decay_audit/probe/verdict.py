"""Expected vs measured, per variable: the verdicts ``verify`` reports and fails on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from decay_audit.kinds import TextEnum
from decay_audit.probe.twin import ProbeRun, StepDelta

# Optimizers whose update reads the variable's value, so the decayed value changes the
# gradient update too and ``A - C`` is not exactly lr*wd*w: only presence is checked.
VALUE_DEPENDENT_UPDATES = frozenset({"Ftrl", "Lamb", "Adafactor", "Muon"})


class Outcome(TextEnum):
    OK = "ok"
    DOUBLE_DECAY = "double-decay"
    """Both decoupled (optimizer) and coupled (penalty in the loss) decay on one variable."""
    NOT_DECAYED = "not-decayed"
    """Intended to decay, but no decay was measured in any probe step."""
    DECAYED_AGAINST_INTENT = "decayed-against-intent"
    RATE_MISMATCH = "rate-mismatch"
    """Decoupled decay present, but not lr_t * weight_decay * w."""



@dataclass(frozen=True)
class Measurement:
    """What one trainable variable received over the probe, and the verdict."""

    path: str
    expected_decay: bool
    intent: str
    """Where the expectation came from (preset and kind, a rule file, an --expect glob)."""
    steps: int
    decoupled_steps: int
    """Steps in which a decoupled (optimizer) contribution was measured."""
    coupled_steps: int
    """Steps in which a coupled (penalty through the optimizer) contribution was measured."""
    decoupled_ratio: float | None
    """Measured decoupled shrink / configured lr_t*wd*w, averaged over steps that had it (1.0 = as configured)."""
    coupled_relative: float
    """Largest coupled change, relative to the variable's largest magnitude."""
    outcome: Outcome
    detail: str

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def measured(self) -> str:
        if self.decoupled_steps and self.coupled_steps:
            return "decoupled+coupled"
        if self.decoupled_steps:
            return "decoupled"
        if self.coupled_steps:
            return "coupled"
        return "none"


def _present(delta: np.ndarray, noise: float) -> bool:
    return bool(delta.size) and float(np.max(np.abs(delta))) > noise


def _ratio(step: StepDelta) -> float | None:
    """Least-squares fit of the decoupled change to -rate * w (1.0 = exactly as configured)."""
    denominator = step.configured_rate * float(np.sum(step.weight * step.weight))
    if denominator <= 0:
        return None
    return float(-np.sum(step.decoupled * step.weight)) / denominator


def _rate_tolerance(step: StepDelta) -> float:
    """float32 rounds w - rate*w: the measured shrink is off by about eps/rate relative."""
    eps = float(np.finfo(np.float32).eps)
    return max(2e-3, 16 * eps / step.configured_rate) if step.configured_rate > 0 else float("inf")


def judge(run: ProbeRun, expected: dict[str, tuple[bool, str]]) -> list[Measurement]:
    results = []
    value_dependent = any(name in run.optimizer_name for name in VALUE_DEPENDENT_UPDATES)
    for index, path in enumerate(run.paths):
        deltas = [step[index] for step in run.steps]
        expect, intent = expected.get(path, (False, "not in the intent: assumed not decayed"))
        decoupled_steps = [d for d in deltas if _present(d.decoupled, d.noise)]
        coupled_steps = [d for d in deltas if _present(d.coupled, d.noise)]
        ratios, rate_off = [], []
        for step in decoupled_steps:
            ratio = _ratio(step)
            if ratio is None:
                continue
            ratios.append(ratio)
            if not value_dependent and abs(ratio - 1.0) > _rate_tolerance(step):
                rate_off.append(ratio)
        ratio = float(np.mean(ratios)) if ratios else None
        scale = max(float(np.max(np.abs(d.weight), initial=0.0)) for d in deltas) or 1.0
        coupled_relative = max((float(np.max(np.abs(d.coupled), initial=0.0)) for d in deltas), default=0.0) / scale
        outcome, detail = _outcome(expect, bool(decoupled_steps), bool(coupled_steps), rate_off, len(deltas), ratio,
                                   coupled_relative)
        results.append(Measurement(path, expect, intent, len(deltas), len(decoupled_steps), len(coupled_steps),
                                   ratio, coupled_relative, outcome, detail))
    return results


def _outcome(expect: bool, decoupled: bool, coupled: bool, rate_off: list[float], steps: int,
             ratio: float | None, coupled_relative: float) -> tuple[Outcome, str]:
    figures = []
    if decoupled:
        figures.append(f"decoupled ratio {ratio:.4g} of lr*wd*w" if ratio is not None else "decoupled")
    if coupled:
        figures.append(f"coupled up to {coupled_relative:.3g} x |w| per step")
    measured = "; ".join(figures) or "no decay measured"
    if decoupled and coupled:
        return Outcome.DOUBLE_DECAY, f"double decay: {measured}"
    if expect and not (decoupled or coupled):
        return Outcome.NOT_DECAYED, f"expected decay, none measured in {steps} steps (never switched on)"
    if not expect and (decoupled or coupled):
        return Outcome.DECAYED_AGAINST_INTENT, f"expected no decay, measured {measured}"
    if rate_off:
        return Outcome.RATE_MISMATCH, f"decoupled decay is {rate_off[0]:.4g} x the configured lr*wd*w"
    return Outcome.OK, measured
