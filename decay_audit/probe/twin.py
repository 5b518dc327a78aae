"""The twin-step probe: what each variable actually receives from every decay source.

At every step, from ONE snapshot of all model variables and optimizer variables, the
probe runs the set-up's real step (A) and its twins on the same batch:

- C: the same step with the optimizer's ``weight_decay`` switched off (penalties kept);
- B: the reference with every decay source removed (no ``weight_decay``, weight
  regularizers off, ``data_loss`` in place of a hand-written step).

``A - C`` is the decoupled contribution, ``C - B`` the coupled one (the penalty gradient
as the optimizer passed it on). A hand-written ``train_step`` cannot be re-run with the
optimizer's decay off (a traced tf.function keeps what it saw when traced), so there the
decoupled part is measured by the same differential on the optimizer alone (zero
gradients, decay on vs off) and the coupled part is ``A - B`` minus it. The probe then
continues from A's state. Measuring per step, not as two N-step runs, matters: decayed
kernels change every later gradient, so runs from one snapshot differ everywhere
(shared FACTS). ``model.variables`` (not ``weights``) are restored: a Dropout layer's seed
state lives outside ``weights``, and different masks would fake decay everywhere.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from decay_audit.probe.data import BatchSource
from decay_audit.probe.setup import Stage, TrainingSetup, at_stage


@dataclass(frozen=True)
class StepDelta:
    """One probe step's measured contributions for one variable (arrays, same shape as it)."""

    decoupled: np.ndarray
    coupled: np.ndarray
    weight: np.ndarray
    """The variable's value at the start of the step."""
    configured_rate: float
    """lr_t * weight_decay the optimizer is configured with at this step (0 without weight_decay)."""
    noise: float
    """Largest difference that float rounding alone can produce for this variable and step."""


@dataclass(frozen=True)
class ProbeRun:
    paths: tuple[str, ...]
    steps: tuple[tuple[StepDelta, ...], ...]
    """steps[i][j]: step i, trainable variable j."""
    optimizer_name: str
    weight_decay: float | None
    device: str
    hand_written_step: bool


def inner_optimizer(optimizer: Any) -> Any:
    """LossScaleOptimizer (what compile() wraps under mixed_float16) holds the real one."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _all_optimizer_variables(optimizer: Any) -> list[Any]:
    seen, result = set(), []
    for candidate in (optimizer, inner_optimizer(optimizer)):
        for variable in candidate.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                result.append(variable)
    return result


class _State:
    """Copies of every model and optimizer variable, to put back exactly."""

    def __init__(self, variables: list[Any]):
        self.variables = variables
        self.values = [np.array(v.numpy(), copy=True) for v in variables]

    def restore(self) -> None:
        for variable, value in zip(self.variables, self.values):
            variable.assign(value)


@contextlib.contextmanager
def decoupled_decay_off(optimizer: Any) -> Iterator[None]:
    """Keras' base optimizer skips ``_apply_weight_decay`` when ``weight_decay is None``."""
    inner = inner_optimizer(optimizer)
    saved = inner.weight_decay
    inner.weight_decay = None
    try:
        yield
    finally:
        inner.weight_decay = saved


@contextlib.contextmanager
def regularizers_off(model: Any) -> Iterator[None]:
    """Keras 3 computes weight penalties from ``variable.regularizer`` on each ``model.losses`` read."""
    saved = []
    for variable in model.trainable_weights:
        regularizer = getattr(variable, "regularizer", None)
        if regularizer is not None:
            saved.append((variable, regularizer))
            variable.regularizer = None
    try:
        yield
    finally:
        for variable, regularizer in saved:
            variable.regularizer = regularizer


def _loss_function(setup: TrainingSetup, with_penalties: bool) -> Callable[[Any, Any, Any], Any]:
    model = setup.model
    if setup.data_loss is not None:
        def loss(x, y, y_pred):
            value = setup.data_loss(y, y_pred)
            if with_penalties and model.losses:
                value = value + sum(model.losses)
            return value
        return loss
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        return lambda x, y, y_pred: model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
    import keras

    mse = keras.losses.MeanSquaredError()

    def default_loss(x, y, y_pred):
        value = mse(y, y_pred)
        return value + sum(model.losses) if model.losses else value
    return default_loss


def keras_step(model: Any, optimizer: Any, loss_fn: Callable, x: Any, y: Any) -> None:
    """Keras 3's own ``train_step`` (TensorFlow backend), run eagerly so the twins see option changes."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = loss_fn(x, y, y_pred)
        scaled = optimizer.scale_loss(loss)
    variables = model.trainable_variables
    gradients = tape.gradient(scaled, variables)
    optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])


def _current_learning_rate(optimizer: Any) -> float:
    inner = inner_optimizer(optimizer)
    try:
        return float(np.asarray(inner.learning_rate))
    except (TypeError, ValueError):
        return float("nan")


def _zero_gradient_step(model: Any, optimizer: Any) -> None:
    import keras

    variables = model.trainable_variables
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in variables])


def _values(variables: list[Any]) -> list[np.ndarray]:
    return [np.array(v.numpy(), dtype=np.float64) for v in variables]


def _noise(before: np.ndarray, *afters: np.ndarray, dtype: Any) -> float:
    """Rounding of one update in the variable's dtype: a few ulps of the largest magnitude involved."""
    eps = float(np.finfo(np.dtype(dtype) if np.dtype(dtype).kind == "f" else np.float32).eps)
    scale = max([float(np.max(np.abs(before), initial=0.0))] + [float(np.max(np.abs(a), initial=0.0)) for a in afters])
    return 8.0 * eps * scale


def run_probe(setup: TrainingSetup, steps: int = 3, batch_size: int = 4, seed: int = 0,
              device: str | None = None, batches: BatchSource | None = None) -> ProbeRun:
    """Measure per step and per variable; the model and optimizer are restored afterwards."""
    import tensorflow as tf

    strategy = getattr(setup.model, "distribute_strategy", None)
    default = tf.distribute.get_strategy()
    distributed = strategy is not None and not isinstance(strategy, type(default))
    with strategy.scope() if distributed else contextlib.nullcontext():
        return _run_probe(setup, steps, batch_size, seed, device, strategy if distributed else None,
                          batches or BatchSource(setup, batch_size, np.random.default_rng(seed)))


def _run_probe(setup: TrainingSetup, steps: int, batch_size: int, seed: int, device: str | None,
               strategy: Any, batches: BatchSource) -> ProbeRun:
    import tensorflow as tf

    model, optimizer = setup.model, setup.optimizer
    variables = model.trainable_variables
    if not getattr(optimizer, "built", False):
        optimizer.build(variables)
    everything = list(model.variables) + _all_optimizer_variables(optimizer)
    original = _State(everything)
    rng = np.random.default_rng(seed)
    device_name = device or ("GPU" if tf.config.list_logical_devices("GPU") else "CPU")
    inner = inner_optimizer(optimizer)
    loss_with = _loss_function(setup, with_penalties=True)
    loss_without = _loss_function(setup, with_penalties=False)

    def run(step: Callable[[], None]) -> None:
        """Under a distribution strategy, steps run in replica context, as Keras' fit does."""
        if strategy is not None:
            strategy.run(step)
        else:
            step()

    measured: list[tuple[StepDelta, ...]] = []
    try:
        with tf.device(f"/{device_name}:0") if strategy is None else contextlib.nullcontext():
            for variable in variables:  # decay cannot move a zero: give zero-initialised weights a value
                value = variable.numpy()
                if value.size and not np.any(value):
                    variable.assign(rng.normal(0.0, 0.02, size=value.shape).astype(value.dtype))
            for _ in range(steps):
                x, y = batches.next()
                start = _State(everything)
                before = _values(variables)
                rate = _current_learning_rate(optimizer) * float(inner.weight_decay or 0.0)
                with at_stage(Stage.STEP, setup.description or str(getattr(model, "name", "model"))):
                    if setup.train_step is not None:
                        setup.train_step(model, optimizer, x, y)
                    else:
                        run(lambda: keras_step(model, optimizer, loss_with, x, y))
                real = _values(variables)
                after_real = _State(everything)
                start.restore()
                with decoupled_decay_off(optimizer), regularizers_off(model):
                    run(lambda: keras_step(model, optimizer, loss_without, x, y))
                reference = _values(variables)
                start.restore()
                if setup.train_step is None:
                    with decoupled_decay_off(optimizer):
                        run(lambda: keras_step(model, optimizer, loss_with, x, y))
                    no_decoupled = _values(variables)
                    decoupled = [r - n for r, n in zip(real, no_decoupled)]
                    coupled = [n - b for n, b in zip(no_decoupled, reference)]
                else:
                    run(lambda: _zero_gradient_step(model, optimizer))
                    with_decay = _values(variables)
                    start.restore()
                    with decoupled_decay_off(optimizer):
                        run(lambda: _zero_gradient_step(model, optimizer))
                    without_decay = _values(variables)
                    start.restore()
                    decoupled = [w - o for w, o in zip(with_decay, without_decay)]
                    coupled = [(r - b) - d for r, b, d in zip(real, reference, decoupled)]
                measured.append(tuple(
                    StepDelta(d, c, w, rate, _noise(w, r, dtype=v.dtype))
                    for d, c, w, r, v in zip(decoupled, coupled, before, real, variables)))
                after_real.restore()
    finally:
        original.restore()
    return ProbeRun(
        paths=tuple(_path(v) for v in variables),
        steps=tuple(measured),
        optimizer_name=type(optimizer).__name__ + (f"({type(inner).__name__})" if inner is not optimizer else ""),
        weight_decay=inner.weight_decay,
        device=device_name,
        hand_written_step=setup.train_step is not None,
    )


def _path(variable: Any) -> str:
    path = getattr(variable, "path", None) or variable.name
    return path[:-2] if path.endswith(":0") else path
