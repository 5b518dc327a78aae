"""tf_keras (Keras 2) set-ups: compiled models, new-style and legacy optimizers, hand-written steps.

Probed on TensorFlow, eagerly, through the model's own ``train_step`` (the function ``fit``
wraps in a ``tf.function``): a transformers ``TFPreTrainedModel`` keeps its own
``train_step``, so the measured step is the one the user trains with.

Decay switches, read from the tf_keras 2.21 / transformers 4.49 source:

- new-style optimizers (``tf_keras.optimizers.AdamW``, ``Adam(weight_decay=)``,
  ``experimental.*``): ``_BaseOptimizer._apply_weight_decay`` returns at once when
  ``weight_decay is None``; exclusions (``exclude_from_weight_decay``) are ``re.search``ed
  in ``variable.name``, the full ``layer/kernel:0`` name;
- legacy optimizers (``tf_keras.optimizers.legacy.*``, ``OptimizerV2``) have no decay of
  their own (``decay=`` is learning-rate decay); subclasses add one through a hook:
  transformers' ``AdamWeightDecay`` runs ``_decay_weights_op`` in every
  ``_resource_apply_*`` and skips it when ``weight_decay_rate == 0``
  (``_do_use_weight_decay``); TF-Addons-style ``DecoupledWeightDecayExtension`` keeps a
  ``weight_decay`` hyperparameter in ``_hyper``. Every numeric attribute or hyperparameter
  whose name contains ``weight_decay`` is set to 0 in the reference;
- regularizers: ``add_weight(regularizer=...)`` registers a callable in the layer's
  ``_callable_losses`` that ``model.losses`` evaluates on every read; the reference empties
  those lists.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from decay_audit.probe.backends.common import DecaySource, SourceKind, Trainable

NAME = "tf_keras"


def is_tf_keras_object(obj: Any) -> bool:
    """tf_keras classes live in the ``tf_keras`` package (also what ``tf.keras`` is under TF_USE_LEGACY_KERAS=1)."""
    return any(cls.__module__.split(".")[0] == "tf_keras" for cls in type(obj).__mro__)


def inner_optimizer(optimizer: Any) -> Any:
    """tf_keras' LossScaleOptimizer (V2 for legacy, V3 for new-style) wraps the real one."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _is_legacy(optimizer: Any) -> bool:
    return any(cls.__name__ == "OptimizerV2" for cls in type(inner_optimizer(optimizer)).__mro__)


def optimizer_variables(optimizer: Any) -> list[Any]:
    """``variables`` is a property returning a CallableList (new-style) or a method (legacy)."""
    seen, result = set(), []
    for candidate in (optimizer, inner_optimizer(optimizer)):
        variables = candidate.variables
        if callable(variables) and not isinstance(variables, list):
            variables = variables()
        for variable in variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                result.append(variable)
    return result


def build_optimizer(optimizer: Any, variables: list[Any]) -> None:
    """Create slots before the first snapshot: legacy optimizers create them on first apply."""
    inner = inner_optimizer(optimizer)
    if _is_legacy(inner):
        inner._create_all_weights(variables)
    elif not getattr(inner, "_built", False):
        inner.build(variables)


_EXCLUSION_LISTS = re.compile(r"(exclude|include)", re.IGNORECASE)


def _legacy_decay_knobs(optimizer: Any) -> list[str]:
    """Names of the numeric decay settings a legacy subclass added: ``weight_decay_rate`` (transformers),
    a ``weight_decay`` hyperparameter (TF-Addons' extension)."""
    names = [n for n in getattr(optimizer, "_hyper", {}) if "weight_decay" in n]
    for name, value in vars(optimizer).items():
        if "weight_decay" in name and not _EXCLUSION_LISTS.search(name) and name not in names:
            if isinstance(value, (int, float)) and not isinstance(value, bool) or hasattr(value, "dtype"):
                names.append(name)
    return names


def _read_number(optimizer: Any, name: str) -> float:
    value = optimizer._get_hyper(name) if name in getattr(optimizer, "_hyper", {}) else getattr(optimizer, name)
    try:
        return float(np.asarray(value))
    except (TypeError, ValueError):
        return float("nan")


@contextlib.contextmanager
def _knobs_off(optimizer: Any, names: list[str]) -> Iterator[None]:
    saved = {name: _read_number(optimizer, name) for name in names}
    try:
        for name in names:
            setattr(optimizer, name, 0.0)  # OptimizerV2.__setattr__ routes hyperparameters to _set_hyper
        yield
    finally:
        for name, value in saved.items():
            setattr(optimizer, name, value)


@contextlib.contextmanager
def _new_style_off(optimizer: Any) -> Iterator[None]:
    saved = optimizer.weight_decay
    optimizer.weight_decay = None
    try:
        yield
    finally:
        optimizer.weight_decay = saved


@contextlib.contextmanager
def _regularizers_off(model: Any) -> Iterator[None]:
    saved = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        losses = getattr(layer, "_callable_losses", None)
        if losses:
            saved.append((layer, losses))
            layer._callable_losses = []
    try:
        yield
    finally:
        for layer, losses in saved:
            layer._callable_losses = losses


def learning_rate(optimizer: Any) -> float:
    """The learning rate the next update uses (schedules evaluated at ``iterations``; legacy ``decay=``)."""
    import tensorflow as tf

    inner = inner_optimizer(optimizer)
    try:
        if _is_legacy(inner):
            return float(inner._decayed_lr(tf.float32))
        rate = inner._learning_rate
        if callable(rate):
            rate = rate(inner.iterations)
        return float(np.asarray(rate))
    except (TypeError, ValueError, AttributeError):
        return float("nan")


def decay_factor(optimizer: Any) -> tuple[float, str | None]:
    """(factor, formula) of the optimizer's decoupled decay per step relative to ``w``; 0 without one.

    New-style tf_keras: ``w -= w * weight_decay * lr``. transformers' ``AdamWeightDecay``:
    ``w -= lr_t * w * weight_decay_rate``. Other legacy hooks: unknown formula (NaN):
    only the presence of decay is judged.
    """
    inner = inner_optimizer(optimizer)
    if not _is_legacy(inner):
        wd = getattr(inner, "weight_decay", None)
        return (float(wd) if wd else 0.0), "lr*weight_decay"
    if hasattr(type(inner), "_decay_weights_op") and hasattr(inner, "weight_decay_rate"):
        return float(inner.weight_decay_rate or 0.0), "lr*weight_decay_rate"
    knobs = _legacy_decay_knobs(inner)
    if any(_read_number(inner, name) for name in knobs):
        return float("nan"), None
    return 0.0, None


class TfKerasBackend:
    """Probe backend for tf_keras models on TensorFlow."""

    name = NAME

    def accepts(self, setup: Any) -> bool:
        return is_tf_keras_object(setup.model)

    def framework(self) -> str:
        import tf_keras

        return f"tf_keras {tf_keras.__version__} on TensorFlow"

    def trainable(self, setup: Any) -> list[Trainable]:
        return [Trainable(_path(v), v, setup.optimizer) for v in setup.model.trainable_variables]

    def prepare(self, setup: Any) -> None:
        build_optimizer(setup.optimizer, setup.model.trainable_variables)
        for generator in _random_generators(setup.model):
            generator._maybe_init()  # lazily built on the first training call: build before the snapshot

    def state_variables(self, setup: Any) -> list[Any]:
        """Model, optimizer, and the state of every layer's ``tf.random.Generator`` (tf_keras Dropout
        draws from one that ``model.variables`` does not list: twins with different masks fake decay)."""
        states = [g._generator.state for g in _random_generators(setup.model) if getattr(g, "_generator", None)]
        seen, result = set(), []
        for variable in list(setup.model.variables) + optimizer_variables(setup.optimizer) + states:
            if id(variable) not in seen:
                seen.add(id(variable))
                result.append(variable)
        return result

    def read(self, variables: list[Any]) -> list[np.ndarray]:
        return [np.array(v.numpy(), copy=True) for v in variables]

    def write(self, variables: list[Any], values: list[np.ndarray]) -> None:
        for variable, value in zip(variables, values):
            variable.assign(value)

    def decay_sources(self, setup: Any) -> list[DecaySource]:
        sources = []
        inner = inner_optimizer(setup.optimizer)
        if _is_legacy(inner):
            knobs = [n for n in _legacy_decay_knobs(inner) if _read_number(inner, n)]
            if knobs:
                sources.append(DecaySource(SourceKind.DECOUPLED, f"{type(inner).__name__}.{'/'.join(knobs)}",
                                           setup.optimizer, lambda: _knobs_off(inner, knobs)))
        elif getattr(inner, "weight_decay", None) is not None:
            sources.append(DecaySource(SourceKind.DECOUPLED, f"{type(inner).__name__}.weight_decay",
                                       setup.optimizer, lambda: _new_style_off(inner)))
        sources.append(DecaySource(SourceKind.COUPLED, "regularizers (layer._callable_losses)", setup.model,
                                   lambda: _regularizers_off(setup.model)))
        return sources

    def learning_rate(self, optimizer: Any) -> float:
        return learning_rate(optimizer)

    def batch(self, setup: Any, batch_size: int, rng: np.random.Generator) -> tuple[Any, Any]:
        """Functional tf_keras models: shaped from ``model.inputs``. transformers TF models have no
        ``inputs`` but declare ``input_signature`` (ids, masks, type ids) and their vocabulary sizes."""
        from decay_audit.probe.data import synthetic_batch

        model = setup.model
        self._seed = int(rng.integers(2**31 - 1))
        signature = getattr(model, "input_signature", None)
        if getattr(model, "inputs", None) or not isinstance(signature, dict):
            return synthetic_batch(model, batch_size, rng)
        self._seed = int(rng.integers(2**31 - 1))
        x = {key: _signature_input(key, spec, model, batch_size, rng) for key, spec in signature.items()}
        return x, _targets(model, x, rng)

    def decay_factor(self, optimizer: Any) -> tuple[float, str | None]:
        return decay_factor(optimizer)

    def step(self, setup: Any, batch: tuple[Any, Any], switched_off: list[DecaySource]) -> None:
        """One training step as the user's code runs it, with the given decay sources off.

        Compiled models: ``model.train_step`` eagerly. A hand-written step runs only with
        nothing switched off (a traced ``tf.function`` keeps the switches it saw); with any
        source off, the reference is ``data_loss`` through ``optimizer.apply_gradients``.
        """
        import tensorflow as tf

        x, y = (tf.nest.map_structure(tf.convert_to_tensor, part) for part in batch)
        # Legacy stateful dropout (tf.nn.dropout) draws from TF's global seed: the same per twin.
        tf.random.set_seed(getattr(self, "_seed", 0))
        with contextlib.ExitStack() as stack:
            for source in switched_off:
                stack.enter_context(source.off())
            if setup.train_step is None:
                setup.model.train_step((x, y))
            elif not switched_off:
                setup.train_step(setup.model, setup.optimizer, x, y)
            else:
                self._reference_step(setup, x, y, penalties=not any(
                    s.kind is SourceKind.COUPLED for s in switched_off))

    def _reference_step(self, setup: Any, x: Any, y: Any, penalties: bool) -> None:
        import tensorflow as tf

        model = setup.model
        loss_fn = setup.data_loss or _compiled_or_mse(model)
        with tf.GradientTape() as tape:
            prediction = model(x, training=True)
            loss = loss_fn(y, prediction)
            if penalties and model.losses:
                loss = loss + tf.add_n(model.losses)
        variables = model.trainable_variables
        gradients = tape.gradient(loss, variables)
        setup.optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])

    def zero_gradient_step(self, setup: Any, switched_off: list[DecaySource]) -> None:
        import tensorflow as tf

        with contextlib.ExitStack() as stack:
            for source in switched_off:
                stack.enter_context(source.off())
            variables = setup.model.trainable_variables
            setup.optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])

    def device(self, requested: str | None) -> str:
        from decay_audit.probe.backends.common import tensorflow_device

        return tensorflow_device(requested)

    def placement(self, device: str) -> contextlib.AbstractContextManager:
        import tensorflow as tf

        return tf.device(f"/{device}:0")

    def determinism(self) -> contextlib.AbstractContextManager:
        from decay_audit.probe.backends.common import tensorflow_determinism

        return tensorflow_determinism()


def _random_generators(model: Any) -> list[Any]:
    generators = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        generator = getattr(layer, "_random_generator", None)
        if generator is not None and hasattr(generator, "_maybe_init") and generator not in generators:
            generators.append(generator)
    return generators


def _signature_input(key: str, spec: Any, model: Any, batch_size: int, rng: np.random.Generator) -> np.ndarray:
    """One input of a transformers signature: masks of ones, type ids 0, ids inside the vocabulary."""
    config = getattr(model, "config", None)
    length = min(8, int(getattr(config, "max_position_embeddings", 8) or 8))
    shape = tuple(batch_size if i == 0 else (length if d is None else int(d)) for i, d in enumerate(spec.shape))
    dtype = spec.dtype.as_numpy_dtype
    if not np.issubdtype(dtype, np.integer):
        return rng.normal(size=shape).astype(dtype)
    if "mask" in key:
        return np.ones(shape, dtype)
    if "type" in key or "segment" in key:
        return np.zeros(shape, dtype)
    if "position" in key:
        return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
    return rng.integers(0, max(int(getattr(config, "vocab_size", 2) or 2), 1), size=shape).astype(dtype)


def _targets(model: Any, x: Any, rng: np.random.Generator) -> Any:
    """Targets the compiled loss accepts, per output (a transformers ModelOutput is a dict)."""
    from decay_audit.probe.data import _loss_name, _target

    prediction = model(x, training=False)
    loss = getattr(model, "loss", None)
    if isinstance(prediction, dict):
        targets = {key: _target(value, _loss_name(loss, key), rng)
                   for key, value in prediction.items() if value is not None and hasattr(value, "shape")}
        return next(iter(targets.values())) if len(targets) == 1 else targets
    return _target(prediction, _loss_name(loss, 0), rng)


def _compiled_or_mse(model: Any) -> Callable[[Any, Any], Any]:
    compiled = getattr(model, "compiled_loss", None)
    if compiled is not None:
        return lambda y, prediction: compiled(y, prediction)  # regularization_losses not passed: data only
    import tf_keras

    return tf_keras.losses.MeanSquaredError()


def _path(variable: Any) -> str:
    from decay_audit.loaders.live import _variable_path

    return _variable_path(variable)  # the same key the intent (scan of the live model) uses
