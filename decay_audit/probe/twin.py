"""The twin-step probe: what each variable actually receives from every decay source.

At every step, from ONE snapshot of the whole state (all model variables, every
optimizer's variables, metric state), the probe runs the set-up's real step (A) and
twins of it on the same batch. Every twin is the SAME compiled step; only the runtime
strength of decay knobs differs (``backends/interface.py``, point 2):

- ``T_s``, one per decoupled source ``s`` (each optimizer's ``weight_decay``, Muon's
  ``adam_weight_decay``, ...): ``s`` scaled by ``m`` (0 = off). For the base-class decay
  ``v -= lr*wd*v`` the step is linear in the strength, so ``(T_s - A) / (m - 1)`` is what
  ``s`` did to each variable at its configured strength. At fine-tuning rates
  (lr*wd below ``AMPLIFY_BELOW`` per step, e.g. 5e-7 for BERT's lr 5e-5 wd 0.01)
  the shrink is below float32's resolution of the weight, so ``m`` amplifies the source
  to ``AMPLIFIED_RATE`` per step instead: exclusions select variables by object or name,
  never by strength, so this changes the magnitude and not the selection; the report
  gives the configured rate.
- ``S``: every coupled source off (weight regularizers, Ftrl's l1/l2 strengths):
  ``A - S`` is the coupled contribution, as the optimizer passed the penalty on.
- ``B`` (hand-written steps with a data loss): the same update with the data loss
  only, coupled sources off: ``S - B`` exposes penalties written into the step's own
  code. ``B`` is computed by another program than the user's, so it differs from ``S``
  by rounding too, which an adaptive optimizer blows up on variables whose gradient is
  pure noise (a conv bias before BatchNorm). Only decay-like differences count there:
  above the noise floor AND pulling the weight toward zero (``_toward_zero``).

The noise floor is calibrated per run: the real step repeated from the same snapshot
(non-deterministic kernels differ there) on top of a few ulps of the weight. A step that
is not reproducible makes one repeat a weak estimate (a 4-element bias has 4 samples, a
scalar 1), so there the repeat runs at every step, the floor keeps the largest
difference seen, and a decoupled difference counts only when it is shaped like decay
(``DECAY_SHAPED``). The probe then continues from A's state. Measuring per step, not as two N-step runs, matters:
decayed kernels change every later gradient (shared FACTS).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from decay_audit.probe.backends import DecaySource, KerasBackend, ProbeBackend, SourceKind, backend_for, load_backend
from decay_audit.probe.data import BatchSource
from decay_audit.probe.setup import Stage, TrainingSetup, at_stage

AMPLIFY_BELOW = 1e-4
"""Per-step decoupled rate (lr*wd) under which a source is measured amplified: float32 resolves
a relative change of about 1e-7 and the floor is a few ulps, so 1e-4 keeps a 100x margin."""
AMPLIFIED_RATE = 1e-2
"""The per-step rate an amplified twin runs a source at: well above the floor, small enough
that the decayed weight stays in the same regime for value-dependent optimizers."""
TOWARD_ZERO = 0.75
"""Share of a hand-written difference (by magnitude) that must pull weights toward zero for it
to count as decay: noise has no preferred direction, a penalty always points to zero."""
ULPS = 8.0
DECAY_SHAPED = 0.9
"""In a step that is not reproducible, the cosine a decoupled source's change must reach with -w
to count: decoupled decay moves the weight by exactly -rate*w (cosine 1), noise has no
direction (a random difference of 4 elements reaches 0.9 about 2% of the time, of 16 never)."""


@dataclass(frozen=True)
class SourceEffect:
    """What one decoupled source did to one variable in one step."""

    source: int
    """Index into :attr:`ProbeRun.sources`."""
    delta: np.ndarray
    """The change the source made at its configured strength (``(T - A) / (m - 1)``)."""
    present: bool
    """The twin's raw difference was above the noise floor."""
    rate: float
    """lr_t * value: the configured relative shrink per step."""
    scale: float
    """The twin's scale: 0 (switched off) or the amplification factor."""


@dataclass(frozen=True)
class StepDelta:
    """One probe step's measured contributions for one variable (arrays, same shape as it)."""

    decoupled: np.ndarray
    """Sum of the decoupled sources' changes, at configured strength."""
    coupled: np.ndarray
    """Switchable penalties (A - S) plus decay-like hand-written ones (S - B)."""
    weight: np.ndarray
    """The variable's value at the start of the step."""
    configured_rate: float
    """Summed lr_t * value of the decoupled sources measured on this variable (0 without)."""
    noise: float
    """The noise floor for this variable and step (ulps plus the calibrated repeat difference)."""
    effects: tuple[SourceEffect, ...] = ()
    """Per decoupled source."""
    coupled_present: bool = False
    """A coupled contribution above the noise floor (or seen through the amplified penalty twin)."""
    hand_written: bool = False
    """The coupled part came from penalties in the hand-written step (no knob reaches them)."""
    penalty_gradient: float | None = None
    """<g, w> / <w, w> of the variable's own regularizer gradient g (2*l2 for Keras L2)."""


@dataclass(frozen=True)
class ProbeRun:
    """Everything one probe measured, for :func:`decay_audit.probe.verdict.judge`."""

    paths: tuple[str, ...]
    """The trainable variables, in the model's order."""
    steps: tuple[tuple[StepDelta, ...], ...]
    """steps[i][j]: step i, trainable variable j."""
    optimizer_name: str
    """The optimizer class(es), a wrapper shown around its inner one: ``LossScaleOptimizer(AdamW)``."""
    weight_decay: float | None
    """The ``weight_decay`` configured (the largest, with several optimizers); None without."""
    device: str
    hand_written_step: bool
    sources: tuple[DecaySource, ...] = ()
    """Every decay knob found and switched in the twins."""
    backend: str = KerasBackend.TENSORFLOW.value
    """The probe backend's name."""
    noise_calibration: float = 0.0
    """Largest difference between the real step and its repeat from the same snapshot."""
    notes: tuple[str, ...] = ()


def _floor(before: np.ndarray, after: np.ndarray, dtype: Any, calibrated: float) -> float:
    """Rounding of one update in the variable's dtype plus the measured repeat difference."""
    kind = np.dtype(dtype).kind if hasattr(dtype, "kind") or isinstance(dtype, str) else "f"
    eps = float(np.finfo(np.dtype(dtype) if kind == "f" else np.float32).eps)
    scale = max(float(np.max(np.abs(before), initial=0.0)), float(np.max(np.abs(after), initial=0.0)))
    return max(ULPS * eps * scale, 4.0 * calibrated)


def _above(delta: np.ndarray, floor: float) -> bool:
    return bool(delta.size) and float(np.max(np.abs(delta))) > floor


def _cosine_to_zero(delta: np.ndarray, weight: np.ndarray) -> float:
    """Cosine between a change and -w: 1 for a pure shrink, about 0 for noise."""
    norms = float(np.linalg.norm(delta)) * float(np.linalg.norm(weight))
    return float(-np.sum(delta * weight)) / norms if norms > 0 else 0.0


def _toward_zero(delta: np.ndarray, weight: np.ndarray) -> float:
    """Share of |delta| that moves elements toward zero (decay-like); 0 when nothing moved."""
    total = float(np.sum(np.abs(delta)))
    if total == 0.0:
        return 0.0
    return float(np.sum(np.abs(delta)[(delta * weight) < 0])) / total


def _dtype_of(variable: Any) -> Any:
    dtype = getattr(variable, "dtype", "float32")
    name = getattr(dtype, "name", dtype)
    try:
        return np.dtype(str(name))
    except TypeError:
        return np.dtype("float32")


def _coupled_amplification(
    backend: ProbeBackend,
    setup: TrainingSetup,
    sources: list[DecaySource],
    penalties: dict[str, np.ndarray],
    before: list[np.ndarray],
    trainables: list[Any],
) -> float:
    """A factor for the weight penalties when their effect is below float32's resolution, else 0.

    The smallest penalty's SGD-like relative change per step, lr * <g, w> / <w, w>
    (``2 * lr * l2`` for Keras' L2), is predicted from its own gradient; under
    AMPLIFY_BELOW the penalty twin runs at AMPLIFIED_RATE instead (presence only: how an
    adaptive optimizer transforms a penalty is not linear in its strength)."""
    if not penalties:
        return 0.0
    rates = [backend.learning_rate(o) for o in backend.optimizers(setup)]
    rates = [r for r in rates if np.isfinite(r) and r > 0]
    if not rates:
        return 0.0
    predicted = []
    for trainable, weight in zip(trainables, before):
        gradient = penalties.get(trainable.path)
        norm = float(np.sum(weight * weight))
        if gradient is not None and norm > 0:
            relative = float(np.sum(gradient * weight)) / norm
            if relative > 0:
                predicted.append(max(rates) * relative)
    smallest = min(predicted, default=0.0)
    return min(AMPLIFIED_RATE / smallest, 1e9) if 0.0 < smallest < AMPLIFY_BELOW else 0.0


def run_probe(
    setup: TrainingSetup,
    steps: int = 3,
    batch_size: int = 4,
    seed: int = 0,
    device: str | None = None,
    backend: ProbeBackend | str | None = None,
    batches: BatchSource | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> ProbeRun:
    """Measure per step and per variable; the model and optimizers are restored afterwards.
    ``on_step(done, total)`` reports each finished step (total may exceed ``steps``: see update_every)."""
    chosen = (load_backend(backend) if isinstance(backend, str) else backend) or backend_for(setup)
    device_name = chosen.device(device)
    steps = max(steps, 2 * chosen.update_every(setup))  # decay happens only on the steps that update
    with chosen.scope(setup, device_name), chosen.determinism(), chosen.switchable(setup) as sources:
        return _run_probe(
            chosen,
            setup,
            list(sources),
            steps,
            batch_size,
            seed,
            device_name,
            batches or BatchSource(setup, batch_size, np.random.default_rng(seed)),
            on_step,
        )


def _run_probe(
    backend: ProbeBackend,
    setup: TrainingSetup,
    sources: list[DecaySource],
    steps: int,
    batch_size: int,
    seed: int,
    device: str,
    batches: BatchSource,
    on_step: Callable[[int, int], None] | None = None,
) -> ProbeRun:
    """``batches`` (the set-up's own data or synthetic, ``probe.data``) reads the model's input
    and target plan once, so a step's batch costs no extra forward pass."""
    model = setup.model
    stage_subject = setup.description or str(getattr(model, "name", "model"))
    rng = np.random.default_rng(seed)
    backend.build(setup)
    trainables = backend.trainable(setup)
    variables = [t.variable for t in trainables]
    dtypes = [_dtype_of(v) for v in variables]
    with at_stage(Stage.STEP, stage_subject):
        step = backend.make_step(setup)
        reference = backend.make_reference_step(setup)
    decoupled = [i for i, s in enumerate(sources) if s.kind is SourceKind.DECOUPLED]
    coupled = [i for i, s in enumerate(sources) if s.kind is SourceKind.COUPLED]
    regularized = any(s.owner == "model" for s in sources)

    state = backend.state_variables(setup)
    original_state, original = list(state), backend.read(state)
    measured: list[tuple[StepDelta, ...]] = []
    calibrated = [0.0] * len(variables)
    reproducible = True  # until the repeat of a step differs

    def values() -> list[np.ndarray]:
        """Trainable values in their own dtype: differences are taken per variable in float64."""
        return backend.read(variables)

    def f64(array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float64)

    try:
        for variable, value in zip(variables, backend.read(variables)):
            # decay cannot move a zero: give zero-initialised weights a value
            if value.size and np.issubdtype(value.dtype, np.floating) and not np.any(value):
                backend.write([variable], [rng.normal(0.0, 0.02, size=value.shape).astype(value.dtype)])
        if not backend.built(setup):
            # Optimizers that only build inside the set-up's step (several optimizers, each on
            # its own subset): one warm-up step creates their state before the first snapshot.
            warm_x, warm_y = batches.peek()
            warm_start = backend.read(model.variables)
            with at_stage(Stage.STEP, stage_subject):
                step(warm_x, warm_y)
            backend.write(model.variables, warm_start)
            state = backend.state_variables(setup)
            # restored afterwards: what existed before, and the new optimizer state as the warm-up left it
            known = {id(v): value for v, value in zip(original_state, original)}
            original_state, original = (
                list(state),
                [known.get(id(v), value) for v, value in zip(state, backend.read(state))],
            )
        for index in range(steps):
            x, y = batches.next()
            before = [f64(a) for a in values()]
            start = backend.snapshot(state)
            rates = {i: backend.learning_rate(sources[i].optimizer) * sources[i].value for i in decoupled}
            penalties = backend.penalty_gradients(setup, sources) if regularized else {}
            scales = {i: (AMPLIFIED_RATE / rates[i] if 0.0 < rates[i] < AMPLIFY_BELOW else 0.0) for i in decoupled}
            # Twins first, the real step last: its state is where the probe goes on from.
            plan: list[tuple[str, Callable[[Any, Any], None], dict[int, float]]] = []
            if index == 0 or not reproducible:  # noise calibration: the real step twice from the same snapshot
                plan.append(("repeat", step, {}))
            plan += [(f"decoupled {i}", step, {i: scales[i]}) for i in decoupled]
            if coupled:
                plan.append(("no coupled", step, {i: 0.0 for i in coupled}))
            amplify_coupled = _coupled_amplification(backend, setup, sources, penalties, before, trainables)
            if amplify_coupled:
                plan.append(
                    (
                        "coupled amplified",
                        step,
                        {i: amplify_coupled for i in coupled if sources[i].variables is not None},
                    )
                )
            if reference is not None:
                plan.append(("reference", reference, {i: 0.0 for i in coupled}))
            plan.append(("real", step, {}))
            results: dict[str, list[np.ndarray]] = {}
            for position, (name, run, twin_scales) in enumerate(plan):
                if position:
                    backend.restore(state, start)
                for i, scale in twin_scales.items():
                    backend.set_scale(sources[i], scale)
                try:
                    with at_stage(Stage.STEP, stage_subject):  # twins run the set-up's own step program
                        run(x, y)
                finally:
                    for i in twin_scales:
                        backend.set_scale(sources[i], 1.0)
                results[name] = values()
            real = [f64(a) for a in results.pop("real")]
            if "repeat" in results:
                calibrated = [
                    max(c, float(np.max(np.abs(r - f64(p)), initial=0.0)))
                    for c, r, p in zip(calibrated, real, results["repeat"])
                ]
                reproducible = not any(calibrated)
            floors = [_floor(b, r, d, c) for b, r, d, c in zip(before, real, dtypes, calibrated)]
            effects: list[list[SourceEffect]] = [[] for _ in variables]
            for i in decoupled:
                for j, (r, t) in enumerate(zip(real, results.pop(f"decoupled {i}"))):
                    difference = f64(t) - r
                    change = difference / (scales[i] - 1.0)
                    present = _above(difference, floors[j]) and (
                        reproducible or _cosine_to_zero(change, before[j]) >= DECAY_SHAPED
                    )
                    effects[j].append(SourceEffect(i, change, present, rates[i], scales[i]))
            no_coupled = [f64(a) for a in results["no coupled"]] if "no coupled" in results else real
            hand = results.get("reference")
            deltas = []
            for j, trainable in enumerate(trainables):
                switchable = real[j] - no_coupled[j]
                coupled_part, coupled_present, from_hand = switchable, _above(switchable, floors[j]), False
                if amplify_coupled and not coupled_present:
                    coupled_present = _above(f64(results["coupled amplified"][j]) - real[j], floors[j])
                if hand is not None:
                    written = no_coupled[j] - f64(hand[j])
                    if _above(written, floors[j]) and _toward_zero(written, before[j]) >= TOWARD_ZERO:
                        coupled_part, coupled_present = coupled_part + written, True
                        from_hand = True
                decoupled_sum = sum((e.delta for e in effects[j]), np.zeros_like(before[j]))
                rate = sum(e.rate for e in effects[j] if e.present)
                penalty = penalties.get(trainable.path)
                relative = None
                if penalty is not None:
                    norm = float(np.sum(before[j] * before[j]))
                    relative = float(np.sum(penalty * before[j])) / norm if norm > 0 else None
                deltas.append(
                    StepDelta(
                        decoupled_sum,
                        coupled_part,
                        before[j],
                        rate,
                        floors[j],
                        tuple(effects[j]),
                        coupled_present,
                        from_hand,
                        relative,
                    )
                )
            measured.append(tuple(deltas))
            if on_step is not None:
                on_step(index + 1, steps)
    finally:
        known = {id(v): value for v, value in zip(original_state, original)}
        current = [v for v in backend.state_variables(setup) if id(v) in known]
        backend.write(current, [known[id(v)] for v in current])
    optimizers = backend.optimizers(setup)
    names = [type(o).__name__ for o in optimizers]
    top = setup.optimizer
    top_name = type(top).__name__ if top is not None else ""
    name = ", ".join(names) if len(names) > 1 else names[0] if names else top_name
    if top is not None and top_name not in names and len(names) == 1:
        name = f"{top_name}({names[0]})"
    decays = [s.value for s in sources if s.kind is SourceKind.DECOUPLED and s.knob == "weight_decay"]
    return ProbeRun(
        paths=tuple(t.path for t in trainables),
        steps=tuple(measured),
        optimizer_name=name,
        weight_decay=decays[0] if len(decays) == 1 else (None if not decays else max(decays)),
        device=device,
        hand_written_step=setup.train_step is not None,
        sources=tuple(sources),
        backend=backend.name,
        noise_calibration=max(calibrated, default=0.0),
        notes=tuple(backend.notes(setup))
        + (
            ()
            if reproducible
            else (
                f"the step is not reproducible (a repeat from the same state differed by up to "
                f"{max(calibrated):.3g}): the noise floor was measured at every step, and a decoupled "
                f"difference counted only when shaped like decay (cosine >= {DECAY_SHAPED} with -w)",
            )
        ),
    )
