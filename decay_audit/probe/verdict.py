"""Expected vs measured, per variable: the verdicts ``verify`` reports and fails on."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from decay_audit.findings import Outcome
from decay_audit.probe.setup import TrainingSetup
from decay_audit.probe.twin import ProbeRun, SourceEffect, StepDelta
from decay_audit.results import Measurement

# Optimizers whose update reads the variable's value, so the decayed value changes the
# gradient update too and ``T - A`` is not exactly lr*wd*w: only presence is checked.
VALUE_DEPENDENT_UPDATES = frozenset({"Ftrl", "Lamb", "Adafactor", "Muon", "ScheduleFreeAdamW"})


def _ratio(effect: SourceEffect, delta: StepDelta) -> float | None:
    """Least-squares fit of the source's change to -rate * w (1.0 = exactly as configured)."""
    denominator = effect.rate * delta.weight_norm
    if denominator <= 0:
        return None
    return effect.shrink / denominator


def _rate_tolerance(effect: SourceEffect) -> float:
    """float32 rounds w - rate*w: the measured shrink is off by about eps/(measured rate) relative."""
    eps = float(np.finfo(np.float32).eps)
    measured_rate = effect.rate * abs(effect.scale - 1.0)
    return max(2e-3, 16 * eps / measured_rate) if measured_rate > 0 else float("inf")


def _coupled_sources(run: ProbeRun, path: str, deltas: list[StepDelta], count_l1: bool = False) -> tuple[str, ...]:
    kinds = ("coupled", "l1") if count_l1 else ("coupled",)
    labels = [s.label for s in run.sources if s.kind.value in kinds and (s.variables is None or path in s.variables)]
    if any(d.hand_written for d in deltas):
        labels.append("hand-written step")
    return tuple(labels)


def _l1_sources(run: ProbeRun, path: str) -> tuple[str, ...]:
    return tuple(s.label for s in run.sources if s.kind.value == "l1" and (s.variables is None or path in s.variables))


GRADIENT_OVERWRITTEN_INTENT = "statistic marked overwrite_with_gradient: never decayed, under every preset"
"""The intent of a variable Keras replaces with its gradient (float8 scales and amax histories): its
optimizer takes such variables out of the update before weight decay (keras 3.15 ``BaseOptimizer.apply``)."""


def _expectation(run: ProbeRun, path: str, expected: dict[str, tuple[bool, str]]) -> tuple[bool, str]:
    """The intent for ``path``; a variable Keras marks ``overwrite_with_gradient`` is a statistic, never
    decayed, whatever its name says, unless an explicit ``--expect-decay`` asks for decay."""
    expect, intent = expected.get(path, (False, "not in the intent: assumed not decayed"))
    if path in run.gradient_overwritten and not intent.startswith("--expect-decay"):
        return False, GRADIENT_OVERWRITTEN_INTENT
    return expect, intent


def judge(
    run: ProbeRun,
    expected: dict[str, tuple[bool, str]],
    setup: TrainingSetup | None = None,
    count_l1: bool = False,
) -> list[Measurement]:
    """One :class:`Measurement` per trainable variable; with ``setup``, a mismatch whose cause the
    set-up shows carries a one-line ``hint`` (see :func:`hint_for`).

    L1 penalties are reported in their own figures and never enter a verdict unless ``count_l1``
    (then they count as coupled decay). On EMA overwrite steps the weights are replaced by their
    moving average, so the decay seen there is the average's share (``1 - momentum`` of the rate):
    such steps show presence, and the ratio is fitted on the other steps only."""
    overwrites = [bool(s.ema_overwrite) for s in run.probed] or [False] * len(run.steps)
    results = []
    for index, path in enumerate(run.paths):
        deltas = [step[index] for step in run.steps]
        expect, intent = _expectation(run, path, expected)
        present_sources: dict[int, list[tuple[SourceEffect, StepDelta, bool]]] = {}
        decoupled_step_count = 0
        for delta, overwrite in zip(deltas, overwrites):
            hits = [e for e in delta.effects if e.present]
            decoupled_step_count += bool(hits)
            for effect in hits:
                present_sources.setdefault(effect.source, []).append((effect, delta, overwrite))
        l1_present = [d.l1_present for d in deltas]
        coupled_present = [d.coupled_present or (count_l1 and d.l1_present) for d in deltas]
        coupled_step_count = sum(coupled_present)
        ratios, rate_off = [], []
        for source, source_hits in present_sources.items():
            value_dependent = any(name in run.sources[source].owner for name in VALUE_DEPENDENT_UPDATES)
            for effect, delta, overwrite in source_hits:
                ratio = _ratio(effect, delta)
                if ratio is None or overwrite:
                    continue
                ratios.append(ratio)
                if not value_dependent and abs(ratio - 1.0) > _rate_tolerance(effect):
                    rate_off.append(ratio)
        ratio = float(np.mean(ratios)) if ratios else None
        first = [hits[0][0] for hits in present_sources.values()]
        decoupled_by = tuple(run.sources[s].label for s in present_sources)
        rate = sum(e.rate for e in first) if first else None
        step_rates = [sum(e.rate for e in d.effects if e.present) for d in deltas if any(e.present for e in d.effects)]
        amplified = max((e.scale for e in first if e.scale > 1.0), default=None)
        scale = max(d.weight_max for d in deltas) or 1.0 if deltas else 1.0
        coupled_relative = (
            max(
                (
                    max(d.coupled_max if d.coupled_present else 0.0, d.l1_max if count_l1 and d.l1_present else 0.0)
                    for d, present in zip(deltas, coupled_present)
                    if present
                ),
                default=0.0,
            )
            / scale
        )
        l1_relative = max((d.l1_max for d in deltas if d.l1_present), default=0.0) / scale
        penalties = [d.penalty_gradient for d in deltas if d.penalty_gradient is not None]
        penalty = float(np.mean(penalties)) if penalties else None
        coupled_by = _coupled_sources(run, path, deltas, count_l1) if coupled_step_count else ()
        ema_overwrite_steps = sum(overwrites[: len(deltas)])
        outcome, detail = _outcome(
            expect,
            decoupled_by,
            bool(coupled_step_count),
            rate_off,
            len(deltas),
            ratio,
            rate,
            amplified,
            coupled_relative,
            penalty,
            coupled_by,
        )
        detail += _step_detail(run, decoupled_step_count, len(deltas), step_rates, ema_overwrite_steps, bool(ratios))
        l1_by = _l1_sources(run, path) if any(l1_present) else ()
        if l1_by and not count_l1:
            detail += (
                f"; L1 by {' + '.join(l1_by)}, up to {l1_relative:.3g} x |w| per step "
                "(sparsity, not weight decay: not counted; --count-l1 counts it)"
            )
        results.append(
            Measurement(
                path,
                expect,
                intent,
                len(deltas),
                decoupled_step_count,
                coupled_step_count,
                ratio,
                coupled_relative,
                outcome,
                detail,
                decoupled_by,
                rate,
                amplified,
                coupled_by,
                penalty,
                l1_steps=sum(l1_present),
                l1_by=l1_by,
                l1_relative=l1_relative,
                l1_counted=count_l1 and any(l1_present),
                ema_overwrite_steps=ema_overwrite_steps,
            )
        )
    if setup is not None:
        results = [dataclasses.replace(m, hint=hint_for(m, run, setup)) if not m.ok else m for m in results]
    return results


def _step_detail(
    run: ProbeRun, decoupled_steps: int, steps: int, step_rates: list[float], overwrites: int, fitted: bool
) -> str:
    """What a reader needs to read the per-step figures: in how many steps decay was seen (when not
    all), whether lr*wd changed between them (a schedule), and the EMA overwrite steps left out of
    the ratio."""
    parts = []
    if decoupled_steps and decoupled_steps < steps:
        updated = sum(1 for s in run.probed if s.updated)
        text = f"decoupled in {decoupled_steps} of {steps} steps"
        if run.probed and updated < steps:
            text += f" ({updated} of the {steps} updated the weights)"
        parts.append(text)
    if len(step_rates) > 1 and max(step_rates) > min(step_rates) * (1 + 1e-6):
        parts.append(
            f"lr*wd from {min(step_rates):.3g} to {max(step_rates):.3g} per step (the learning rate's schedule)"
        )
    if overwrites and decoupled_steps:
        parts.append(
            f"{overwrites} EMA overwrite step{'s' if overwrites > 1 else ''} (weights replaced by their moving "
            f"average: the decay seen there is the average's share) "
            + ("left out of the ratio" if fitted else "not fitted")
        )
    return "".join(f"; {p}" for p in parts)


def searched_name(path: str, backend: str) -> str:
    """The name Keras' ``_use_weight_decay`` searches ``var_names`` in: the ``tf.Variable`` name
    (``dense1/bias:0``) on TensorFlow and tf_keras, the Keras variable's leaf (``bias``) on JAX and
    PyTorch (keras 3.15 ``base_optimizer``; ``rules/keras3.py`` states the same rule for emitted rules)."""
    return path.rpartition("/")[2] if backend in ("jax", "torch") else f"{path}:0"


def _exclusions(optimizer: Any) -> tuple[set[Any], re.Pattern[str] | None]:
    """What ``exclude_from_weight_decay`` stored on a Keras 3 optimizer: variable keys, name pattern."""
    keys = getattr(optimizer, "_exclude_from_weight_decay", None)
    pattern = getattr(optimizer, "_exclude_from_weight_decay_pattern", None)
    return (set(keys) if isinstance(keys, (set, frozenset, list, tuple)) else set()), (
        pattern if isinstance(pattern, re.Pattern) else None
    )


def _dead_alternatives(pattern: re.Pattern[str], names: list[str]) -> list[str]:
    """The ``var_names`` (Keras joins them with ``|``) that match none of ``names``."""
    dead = []
    for alternative in pattern.pattern.split("|"):
        try:
            compiled = re.compile(alternative)
        except re.error:  # a '|' inside one of the user's own groups: judge the whole pattern instead
            return [pattern.pattern] if not any(pattern.search(n) for n in names) else []
        if not any(compiled.search(n) for n in names):
            dead.append(alternative)
    return sorted(dead)


def _searches(alternative: str, names: tuple[str, ...]) -> bool:
    try:
        return any(re.search(alternative, n) for n in names)
    except re.error:
        return False


def hint_for(measurement: Measurement, run: ProbeRun, setup: TrainingSetup) -> str | None:
    """The likely cause of a mismatch and its fix, when the set-up's objects show it.

    Three causes are told apart: exclusions set on a LossScaleOptimizer wrapper (Keras keeps them
    on the wrapper, and only the inner optimizer applies decay), ``var_names`` that match no
    variable under this backend's naming, and a weight regularizer on a variable weight_decay
    already shrinks. Anything else gets None: a guess would send the user to the wrong line.
    """
    path = measurement.path
    if measurement.outcome is Outcome.DOUBLE_DECAY and measurement.decoupled_by:
        regularized = [
            s
            for s in run.sources
            if s.owner == "model" and s.variables and path in s.variables and s.label in measurement.coupled_by
        ]
        if regularized:
            attribute = f"{path.rpartition('/')[2]}_regularizer"
            return (
                f"{regularized[0].knob} and {measurement.decoupled_by[0]} both decay {path}: "
                f"drop the {attribute} or set weight_decay=None"
            )
    if measurement.outcome is not Outcome.DECAYED_AGAINST_INTENT or not measurement.decoupled_by:
        return None
    tops = list(setup.optimizers) or [setup.optimizer]
    for top in tops:
        inner = getattr(top, "inner_optimizer", None)
        keys, pattern = _exclusions(top)
        if inner is not None and (keys or pattern is not None):
            return (
                f"exclusions set on the {type(top).__name__} wrapper do not reach the inner "
                f"{type(inner).__name__}: call exclude_from_weight_decay on the inner optimizer "
                "before compile() wraps it"
            )
    names = [searched_name(p, run.backend) for p in run.paths]
    for source in run.sources:
        _, pattern = _exclusions(source.optimizer)
        if source.label not in measurement.decoupled_by or pattern is None:
            continue
        dead = _dead_alternatives(pattern, names)
        # the ones written for this variable under another naming (the path, or the leaf) come first
        spellings = (path, path.rpartition("/")[2], f"{path}:0")
        meant = [d for d in dead if _searches(d, spellings)] or dead
        if meant:
            return (
                f"var_names {', '.join(repr(d) for d in meant)} match{'es' if len(meant) == 1 else ''} "
                f"no variable on {run.backend}, where Keras "
                f"searches {searched_name(path, run.backend)!r}: use the rule `decay-audit rules MODEL --target "
                "keras` emits, or exclude_from_weight_decay(var_list=...)"
            )
    return None


def _outcome(
    expect: bool,
    decoupled_by: tuple[str, ...],
    coupled: bool,
    rate_off: list[float],
    steps: int,
    ratio: float | None,
    rate: float | None,
    amplified: float | None,
    coupled_relative: float,
    penalty: float | None,
    coupled_by: tuple[str, ...],
) -> tuple[Outcome, str]:
    decoupled = bool(decoupled_by)
    figures = []
    if decoupled:
        text = f"decoupled by {' + '.join(decoupled_by)}"
        if rate is not None:
            text += f", lr*wd = {rate:.3g} per step"
        if ratio is not None:
            text += f", ratio {ratio:.4g} of lr*wd*w"
        if amplified:
            text += f" (measured with the decay amplified {amplified:.3g}x: below float32 resolution as configured)"
        figures.append(text)
    if coupled:
        text = f"coupled by {' + '.join(coupled_by)}" if coupled_by else "coupled"
        if penalty is not None:
            text += f", penalty gradient {penalty:.3g} x w"
        text += f", after the optimizer up to {coupled_relative:.3g} x |w| per step"
        figures.append(text)
    measured = "; ".join(figures) or "no decay measured"
    if (decoupled and coupled) or len(decoupled_by) > 1:
        return Outcome.DOUBLE_DECAY, f"double decay: {measured}"
    if expect and not (decoupled or coupled):
        return Outcome.NOT_DECAYED, f"expected decay, none measured in {steps} steps (never switched on)"
    if not expect and (decoupled or coupled):
        return Outcome.DECAYED_AGAINST_INTENT, f"expected no decay, measured {measured}"
    if rate_off:
        return Outcome.RATE_MISMATCH, f"decoupled decay is {rate_off[0]:.4g} x the configured lr*wd*w ({measured})"
    return Outcome.OK, measured
