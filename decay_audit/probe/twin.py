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
(non-deterministic kernels differ there) on top of a few ulps of the weight. The repeat
runs last at every step, so the probe goes on from a real step's state without keeping a
second snapshot. A step that is not reproducible makes one repeat a weak estimate (a
4-element bias has 4 samples, a scalar 1), so the floor keeps the largest difference
seen, and a decoupled difference counts only when it is shaped like decay
(``DECAY_SHAPED``).

L1 penalties (``SourceKind.L1``) get their own twin with them off: ``A - L1`` is reported
apart from decay (sparsity, not a shrink in proportion to the weight). On an EMA overwrite
step (``ProbeBackend.ema_overwrite``) the weights become their moving average: presence is
still seen there, and the verdict fits the rate on the other steps.

Memory: each twin is reduced against the real step variable by variable as soon as it
ran, in float64 slices (``CHUNK``); a step keeps only figures (:class:`StepDelta`), never
arrays, and the state before the probe waits on disk (:class:`_SpilledState`).

Measuring per step, not as two N-step runs, matters: decayed kernels change every later
gradient (shared FACTS).
"""

from __future__ import annotations

import dataclasses
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from decay_audit.probe.backends import DecaySource, KerasBackend, ProbeBackend, SourceKind, backend_for, load_backend
from decay_audit.probe.data import BatchSource
from decay_audit.probe.setup import Stage, TrainingSetup, at_stage
from decay_audit.results import ProbedStep

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
    """What one decoupled source did to one variable in one step, reduced to the verdict's figures."""

    source: int
    """Index into :attr:`ProbeRun.sources`."""
    present: bool
    """The twin's raw difference was above the noise floor."""
    rate: float
    """lr_t * value: the configured relative shrink per step."""
    scale: float
    """The twin's scale: 0 (switched off) or the amplification factor."""
    shrink: float = 0.0
    """``-<delta, w>`` of the source's change at configured strength (``delta = (T - A) / (m - 1)``):
    the numerator of the least-squares fit of delta to ``-rate * w``."""


@dataclass(frozen=True)
class StepDelta:
    """One probe step's measured contributions for one variable, as scalars.

    Only figures are kept, never arrays: arrays per variable, step and twin cost several times
    the model's size (a BERT-base probe peaked at 4.4x the memory of training)."""

    weight_norm: float
    """<w, w> at the start of the step (float64): the ratio's denominator, with the rate."""
    weight_max: float
    """max |w| at the start of the step."""
    configured_rate: float
    """Summed lr_t * value of the decoupled sources measured on this variable (0 without)."""
    noise: float
    """The noise floor for this variable and step (ulps plus the calibrated repeat difference)."""
    effects: tuple[SourceEffect, ...] = ()
    """Per decoupled source."""
    coupled_present: bool = False
    """A coupled contribution above the noise floor (or seen through the amplified penalty twin)."""
    coupled_max: float = 0.0
    """max |coupled change| in this step (switchable penalties, plus hand-written ones when found)."""
    hand_written: bool = False
    """The coupled part came from penalties in the hand-written step (no knob reaches them)."""
    penalty_gradient: float | None = None
    """<g, w> / <w, w> of the variable's own regularizer gradient g (2*l2 for Keras L2)."""
    l1_present: bool = False
    """An L1 penalty's change above the noise floor (its own twin, with the L1 sources off)."""
    l1_max: float = 0.0
    """max |change| the L1 penalties made in this step."""


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
    probed: tuple[ProbedStep, ...] = ()
    """Per step: the learning rates used, whether the weights moved, whether it was an EMA overwrite."""
    gradient_overwritten: tuple[str, ...] = ()
    """Trainable paths marked ``overwrite_with_gradient`` (float8 scales and amax histories): Keras'
    optimizer replaces them with their gradient and takes them out of the update before weight decay."""


CHUNK = 1 << 20
"""Elements converted to float64 at a time: an embedding table of 23 M entries is reduced in slices,
so the transient float64 copies stay a few MB whatever the model's size."""


def _slices(*arrays: Any) -> Iterator[tuple[np.ndarray, ...]]:
    """Matching flat float64 slices of same-shaped arrays (host arrays or tensors ``np.asarray`` reads)."""
    flats = [np.asarray(a).reshape(-1) for a in arrays]
    size = flats[0].size
    for start in range(0, size, CHUNK):
        yield tuple(np.asarray(f[start : start + CHUNK], dtype=np.float64) for f in flats)


def _max_abs(array: Any) -> float:
    return max((float(np.max(np.abs(a), initial=0.0)) for (a,) in _slices(array)), default=0.0)


def _max_abs_difference(a: Any, b: Any) -> float:
    return max((float(np.max(np.abs(x - y), initial=0.0)) for x, y in _slices(a, b)), default=0.0)


def _dot(a: Any, b: Any) -> float:
    return float(sum(float(np.sum(x * y)) for x, y in _slices(a, b)))


@dataclass(frozen=True)
class _TwinFigures:
    """One twin against the real step, for one variable: ``difference = twin - real``."""

    max_abs: float
    """max |difference|."""
    dot_weight: float
    """<difference, w>."""
    norm: float
    """||difference||."""
    toward_zero: float
    """Share of |difference| that moves elements toward zero."""


def _twin_figures(twin: Any, real: Any, weight: Any, reverse: bool = False) -> _TwinFigures:
    """The figures of ``twin - real`` (``real - twin`` with ``reverse``), one float64 slice at a time."""
    largest = dot = squares = toward = total = 0.0
    for t, r, w in _slices(twin, real, weight):
        difference = r - t if reverse else t - r
        magnitude = np.abs(difference)
        largest = max(largest, float(np.max(magnitude, initial=0.0)))
        dot += float(np.sum(difference * w))
        squares += float(np.sum(difference * difference))
        total += float(np.sum(magnitude))
        toward += float(np.sum(magnitude[(difference * w) < 0]))
    return _TwinFigures(largest, dot, float(np.sqrt(squares)), toward / total if total else 0.0)


def _floor(weight_max: float, real_max: float, dtype: Any, calibrated: float) -> float:
    """Rounding of one update in the variable's dtype plus the measured repeat difference."""
    kind = np.dtype(dtype).kind if hasattr(dtype, "kind") or isinstance(dtype, str) else "f"
    eps = float(np.finfo(np.dtype(dtype) if kind == "f" else np.float32).eps)
    return max(ULPS * eps * max(weight_max, real_max), 4.0 * calibrated)


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
    penalties: dict[str, np.ndarray],
    before: Sequence[Any],
    norms: list[float],
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
    for j, trainable in enumerate(trainables):
        gradient = penalties.get(trainable.path)
        if gradient is not None and norms[j] > 0:
            relative = _dot(gradient, before[j]) / norms[j]
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
    ``on_step(done, total)`` reports each finished step (total may exceed ``steps``: see update_every).

    Fewer steps than two optimizer updates measure nothing under gradient accumulation (decay happens
    only on the steps that update), so ``steps`` is raised to ``2 * update_every``, and the report says
    so in a note."""
    chosen = (load_backend(backend) if isinstance(backend, str) else backend) or backend_for(setup)
    device_name = chosen.device(device)
    every = chosen.update_every(setup)
    raised: tuple[str, ...] = ()
    if steps < 2 * every:
        raised = (
            f"probe steps raised from {steps} to {2 * every}: "
            + (
                f"gradient_accumulation_steps={every} updates every {every}th step, and decay is measured "
                "on at least 2 updates"
                if every > 1
                else "decay is measured on at least 2 steps"
            ),
        )
        steps = 2 * every
    with chosen.scope(setup, device_name), chosen.determinism(), chosen.switchable(setup) as sources:
        run = _run_probe(
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
    return dataclasses.replace(run, notes=raised + run.notes) if raised else run


class _SpilledState:
    """The state as it was before the probe, kept on disk until the probe restores it.

    The probe holds one snapshot per step in memory; keeping the original state beside it would
    be a second copy of the model and every optimizer slot (3x the parameters under Adam). Raw bytes
    with the dtype and shape held here: ``np.save`` cannot round-trip ml_dtypes' bfloat16."""

    def __init__(self, values: Sequence[Any]):
        self._directory = tempfile.TemporaryDirectory(prefix="decay-audit-probe-")
        self._path = Path(self._directory.name) / "state.bin"
        self._layout: list[tuple[int, Any, tuple[int, ...]]] = []
        with open(self._path, "wb", buffering=0) as handle:  # unbuffered: tell() is where tofile() wrote
            for value in values:
                array = np.asarray(value)
                self._layout.append((handle.tell(), array.dtype, array.shape))
                array = np.ascontiguousarray(array)  # at least 1-d: the shape was taken before
                array.tofile(handle)

    def __len__(self) -> int:
        return len(self._layout)

    def value(self, index: int) -> np.ndarray:
        offset, dtype, shape = self._layout[index]
        count = int(np.prod(shape, dtype=np.int64))
        with open(self._path, "rb") as handle:
            handle.seek(offset)
            return np.fromfile(handle, dtype=dtype, count=count).reshape(shape)

    def close(self) -> None:
        self._directory.cleanup()


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
    and target plan once, so a step's batch costs no extra forward pass.

    Memory: one snapshot of the state (model and optimizers) per step, the real step's trainables,
    and one variable of one twin at a time in float64 slices (:func:`_twin_figures`). The real step
    runs first, each twin is reduced against it as soon as it ran, and the step ends by running the
    real step again from the snapshot (the repeat that calibrates the noise floor), so the probe goes
    on from a real step's state without a second snapshot."""
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
    l1 = [i for i, s in enumerate(sources) if s.kind is SourceKind.L1]
    regularized = any(s.owner == "model" and s.kind is SourceKind.COUPLED for s in sources)
    optimizers = backend.optimizers(setup)

    state = backend.state_variables(setup)
    original_state = list(state)
    original = _SpilledState(backend.current(state))
    measured: list[tuple[StepDelta, ...]] = []
    probed: list[ProbedStep] = []
    calibrated = [0.0] * len(variables)
    reproducible = True  # until the repeat of a step differs

    def run_twin(run: Callable[[Any, Any], None], twin_scales: dict[int, float], x: Any, y: Any) -> None:
        for i, scale in twin_scales.items():
            backend.set_scale(sources[i], scale)
        try:
            with at_stage(Stage.STEP, stage_subject):  # twins run the set-up's own step program
                run(x, y)
        finally:
            for i in twin_scales:
                backend.set_scale(sources[i], 1.0)

    def twin(run: Callable[[Any, Any], None], twin_scales: dict[int, float], start: Any, x: Any, y: Any) -> Any:
        """A twin from the step's snapshot; its trainables as :meth:`ProbeBackend.current` gives them."""
        backend.restore(state, start)
        run_twin(run, twin_scales, x, y)
        return backend.current(variables)

    try:
        for variable, current_value in zip(variables, backend.current(variables)):
            # decay cannot move a zero: give zero-initialised weights a value
            value = np.asarray(current_value)
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
            del warm_start
            state = backend.state_variables(setup)
            # restored afterwards: what existed before, and the new optimizer state as the warm-up left it
            position = {id(v): k for k, v in enumerate(original_state)}
            current = backend.read(state)
            values = [original.value(position[id(v)]) if id(v) in position else c for v, c in zip(state, current)]
            del current
            original.close()
            original_state, original = list(state), _SpilledState(values)
            del values
        for index in range(steps):
            x, y = batches.next()
            start = backend.snapshot(state)
            learning_rates = tuple(backend.learning_rate(o) for o in optimizers)
            overwrite = backend.ema_overwrite(setup)
            rates = {i: backend.learning_rate(sources[i].optimizer) * sources[i].value for i in decoupled}
            coupled_sources = [sources[i] for i in coupled]
            penalties = backend.penalty_gradients(setup, coupled_sources) if regularized else {}
            scales = {i: (AMPLIFIED_RATE / rates[i] if 0.0 < rates[i] < AMPLIFY_BELOW else 0.0) for i in decoupled}
            before = [np.asarray(b) for b in backend.current(variables)]  # host views on CPU, no copy
            norms = [_dot(b, b) for b in before]
            weight_max = [_max_abs(b) for b in before]
            amplify_coupled = _coupled_amplification(backend, setup, penalties, before, norms, trainables)

            # The real step first: every twin is reduced against it variable by variable.
            run_twin(step, {}, x, y)
            real = [np.asarray(r) for r in backend.current(variables)]
            real_max = [_max_abs(r) for r in real]
            moved = any(_max_abs_difference(r, b) > 0 for r, b in zip(real, before))

            decoupled_figures: dict[int, list[_TwinFigures]] = {}
            for i in decoupled:
                values = twin(step, {i: scales[i]}, start, x, y)
                decoupled_figures[i] = [_twin_figures(t, r, b) for t, r, b in zip(values, real, before)]
                del values
            switchable = [0.0] * len(variables)
            no_coupled: Sequence[Any] | None = None
            if coupled:
                no_coupled = twin(step, {i: 0.0 for i in coupled}, start, x, y)
                switchable = [_max_abs_difference(r, n) for r, n in zip(real, no_coupled)]
                if reference is None:
                    no_coupled = None
            amplified = [0.0] * len(variables)
            if amplify_coupled:
                amplified_scales = {i: amplify_coupled for i in coupled if sources[i].variables is not None}
                values = twin(step, amplified_scales, start, x, y)
                amplified = [_max_abs_difference(a, r) for a, r in zip(values, real)]
                del values
            written: list[_TwinFigures] = []
            real_minus_hand = [0.0] * len(variables)
            if reference is not None:
                hand = twin(reference, {i: 0.0 for i in coupled}, start, x, y)
                base = no_coupled if no_coupled is not None else real
                written = [_twin_figures(h, n, b, reverse=True) for h, n, b in zip(hand, base, before)]
                real_minus_hand = [_max_abs_difference(r, h) for r, h in zip(real, hand)]
                del hand
                no_coupled = None
            l1_difference = [0.0] * len(variables)
            if l1:
                values = twin(step, {i: 0.0 for i in l1}, start, x, y)
                l1_difference = [_max_abs_difference(r, v) for r, v in zip(real, values)]
                del values
            # The repeat last: it calibrates the noise floor and leaves a real step's state to go on from.
            backend.restore(state, start)
            run_twin(step, {}, x, y)
            del start
            repeat = backend.current(variables)
            calibrated = [max(c, _max_abs_difference(r, p)) for c, r, p in zip(calibrated, real, repeat)]
            reproducible = not any(calibrated)
            del repeat

            floors = [_floor(w, r, d, c) for w, r, d, c in zip(weight_max, real_max, dtypes, calibrated)]
            deltas = []
            for j, trainable in enumerate(trainables):
                empty = not np.asarray(before[j]).size
                effects = []
                for i in decoupled:
                    figures = decoupled_figures[i][j]
                    factor = scales[i] - 1.0
                    shrink = -figures.dot_weight / factor
                    change_norm = figures.norm / abs(factor)
                    weight_norm = float(np.sqrt(norms[j]))
                    cosine = shrink / (change_norm * weight_norm) if change_norm * weight_norm > 0 else 0.0
                    present = (not empty and figures.max_abs > floors[j]) and (reproducible or cosine >= DECAY_SHAPED)
                    effects.append(SourceEffect(i, present, rates[i], scales[i], shrink))
                coupled_max, coupled_present, from_hand = switchable[j], switchable[j] > floors[j], False
                if amplify_coupled and not coupled_present:
                    coupled_present = amplified[j] > floors[j]
                if written:
                    if written[j].max_abs > floors[j] and written[j].toward_zero >= TOWARD_ZERO:
                        coupled_max, coupled_present, from_hand = real_minus_hand[j], True, True
                coupled_present = coupled_present and not empty
                rate = sum(e.rate for e in effects if e.present)
                penalty = penalties.get(trainable.path)
                relative = None
                if penalty is not None and norms[j] > 0:
                    relative = _dot(penalty, before[j]) / norms[j]
                deltas.append(
                    StepDelta(
                        norms[j],
                        weight_max[j],
                        rate,
                        floors[j],
                        tuple(effects),
                        coupled_present,
                        coupled_max,
                        from_hand,
                        relative,
                        not empty and l1_difference[j] > floors[j],
                        l1_difference[j],
                    )
                )
            del real, before, penalties
            measured.append(tuple(deltas))
            probed.append(ProbedStep(index + 1, learning_rates, moved, overwrite))
            if on_step is not None:
                on_step(index + 1, steps)
    finally:
        position = {id(v): k for k, v in enumerate(original_state)}
        for variable in backend.state_variables(setup):
            if id(variable) in position:
                backend.write([variable], [original.value(position[id(variable)])])
        original.close()
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
        probed=tuple(probed),
        gradient_overwritten=tuple(
            t.path for t in trainables if getattr(t.variable, "overwrite_with_gradient", False) is True
        ),
    )
