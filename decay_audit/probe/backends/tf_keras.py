"""tf_keras (Keras 2) set-ups on TensorFlow: compiled models, new-style and legacy optimizers,
transformers' ``AdamWeightDecay``, regularizers, hand-written steps.

The step is the model's own ``train_step`` in one ``tf.function`` (what tf_keras' ``fit``
builds in ``make_train_function``, with XLA when the model was compiled with
``jit_compile=True``); a transformers ``TFPreTrainedModel`` keeps its own ``train_step``.

Decay knobs, read from the tf_keras 2.21 / transformers 4.49 source, each made a runtime
value the traced step reads:

- new-style optimizers (``tf_keras.optimizers.AdamW``, ``Adam(weight_decay=)``,
  ``experimental.*``): ``_BaseOptimizer._apply_weight_decay`` computes
  ``variable * tf.cast(self.weight_decay) * lr`` when ``weight_decay`` is not None, so the
  attribute becomes a ``tf.Variable``. Exclusions (``exclude_from_weight_decay``) are
  ``re.search``ed in ``variable.name``, the full ``layer/kernel:0``;
- legacy optimizers (``tf_keras.optimizers.legacy.*``, ``OptimizerV2``) have no decay of
  their own (``decay=`` decays the learning rate). Subclasses add it through
  ``_prepare_local``'s per-device coefficients: transformers' ``AdamWeightDecay`` puts
  ``weight_decay_rate`` there and ``_decay_weights_op`` reads it back
  (``var -= lr_t * var * apply_state[...]["weight_decay_rate"]``) for every variable its
  ``include_in_weight_decay`` / ``exclude_from_weight_decay`` regexes (``re.search`` in
  ``var.name``) let through. The probe wraps ``_prepare_local`` to multiply every
  coefficient whose key names ``weight_decay`` by a runtime scale;
- Ftrl's penalties (new-style and legacy ``Ftrl``): ``l1_regularization_strength`` (an L1
  penalty: its own source kind, reported apart from decay), ``l2_regularization_strength`` and
  ``l2_shrinkage_regularization_strength`` (coupled decay). New-style ``Ftrl.update_step`` reads
  the attributes when it is traced, so each becomes a ``tf.Variable``; the legacy one reads them
  from ``_prepare_local``'s coefficients (the shrinkage from ``_l2_shrinkage_regularization_strength``),
  scaled there like ``weight_decay_rate``;
- weight regularizers: ``add_weight(regularizer=...)`` registers
  ``partial(_tag_callable, partial(_loss_for_variable, variable))`` in the layer's
  ``_callable_losses``, evaluated on every ``model.losses`` read; each is wrapped to
  multiply its penalty by a runtime scale.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from decay_audit.probe.backends._keras3 import (
    COUPLED_KNOBS,
    NO_DATA_LOSS_NOTE,
    call_hand_written,
    knob_kind,
    listed_optimizers,
    nonzero_float,
    positional_labels,
    regularizer_parts,
    regularizer_sources,
    unique_by_id,
)
from decay_audit.probe.backends._tf_runtime import TensorFlowRuntime, VariableKnob, fresh_trace
from decay_audit.probe.backends.interface import DecaySource, ProbeBackend, SourceKind, Step, Trainable

LEGACY_KNOB_MARK = "weight_decay"
"""A legacy optimizer's numeric attribute or ``_prepare_local`` coefficient naming this is a decay knob."""


def is_tf_keras_object(obj: Any) -> bool:
    """tf_keras classes live in the ``tf_keras`` package (also ``tf.keras`` under TF_USE_LEGACY_KERAS=1)."""
    return any(cls.__module__.split(".")[0] == "tf_keras" for cls in type(obj).__mro__)


def inner_optimizer(optimizer: Any) -> Any:
    """tf_keras' LossScaleOptimizer (V2 around legacy, V3 around new-style) holds the real one."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def is_legacy(optimizer: Any) -> bool:
    return any(cls.__name__ == "OptimizerV2" for cls in type(inner_optimizer(optimizer)).__mro__)


def _variables_of(optimizer: Any) -> list[Any]:
    """``variables`` is a property returning a CallableList (new-style) or a method (legacy)."""
    variables = optimizer.variables
    if callable(variables) and not isinstance(variables, list):
        variables = variables()
    return list(variables)


def legacy_decay_knobs(optimizer: Any) -> dict[str, float]:
    """Numeric attributes a legacy subclass added for decay (``weight_decay_rate``), non-zero."""
    knobs = {}
    for name, value in vars(optimizer).items():
        lowered = name.lower()
        if LEGACY_KNOB_MARK in lowered and "exclude" not in lowered and "include" not in lowered:
            number = nonzero_float(value)
            if number is not None:
                knobs[name] = number
    return knobs


def legacy_penalty_knobs(optimizer: Any) -> dict[str, float]:
    """A legacy optimizer's non-zero Ftrl penalties (``COUPLED_KNOBS``), read where tf_keras 2.21's
    ``legacy.Ftrl`` keeps them: hyperparameters (``_hyper``), the shrinkage in a private attribute."""
    hypers = getattr(optimizer, "_hyper", None) or {}
    knobs = {}
    for knob in COUPLED_KNOBS:
        number = nonzero_float(hypers[knob] if knob in hypers else getattr(optimizer, f"_{knob}", None))
        if number is not None:
            knobs[knob] = number
    return knobs


def _scaled_prepare_local(optimizer: Any, decay_scale: Any, penalty_scales: dict[str, Any]) -> Any:
    """``_prepare_local`` with every ``*weight_decay*`` coefficient times ``decay_scale`` and each Ftrl
    penalty coefficient times its own scale (tf.Variables; None: left as it is)."""
    import tensorflow as tf

    original = optimizer._prepare_local

    def prepare_local(var_device, var_dtype, apply_state):
        original(var_device, var_dtype, apply_state)
        coefficients = apply_state[(var_device, var_dtype)]
        for key in list(coefficients):
            scale = penalty_scales.get(str(key), decay_scale if LEGACY_KNOB_MARK in str(key) else None)
            if scale is not None:
                coefficients[key] = coefficients[key] * tf.cast(scale, coefficients[key].dtype)

    return prepare_local


def _weight_regularizer(callable_loss: Any) -> tuple[Any, Any] | None:
    """(variable, regularizer) of a tf_keras weight-regularizer callable, else None."""
    inner = callable_loss.args[0] if isinstance(callable_loss, functools.partial) and callable_loss.args else None
    if not isinstance(inner, functools.partial) or not inner.args:
        return None
    variable = inner.args[0]
    if not hasattr(variable, "assign"):
        return None
    cells = [c.cell_contents for c in (getattr(inner.func, "__closure__", None) or ())]
    regularizer = next((c for c in cells if callable(c) and hasattr(c, "get_config")), None)
    return variable, regularizer


def _scaled_loss(original: Any, scale: Any) -> Any:
    import tensorflow as tf

    value = original()
    if value is None:
        return None
    scaled = value * tf.cast(scale, value.dtype)
    scaled._unconditional_loss = True
    return scaled


def _scaled_parts_loss(variable: Any, parts: list[tuple[Any, Any]]) -> Any:
    """A split ``L1L2`` penalty: the sum of its ``(part regularizer, scale)`` parts on ``variable``, each
    part switched by its own scale (what tf_keras' ``_loss_for_variable`` computes with the whole one)."""
    import tensorflow as tf

    penalties = [regularizer(variable) for regularizer, _ in parts]
    total = tf.add_n([penalty * tf.cast(scale, penalty.dtype) for penalty, (_, scale) in zip(penalties, parts)])
    total._unconditional_loss = True
    return total


def variable_path(variable: Any) -> str:
    name = variable.name
    return name[:-2] if name.endswith(":0") else name


def _random_generators(model: Any) -> list[Any]:
    """tf_keras Dropout draws from a per-layer ``tf.random.Generator`` whose state is not in
    ``model.variables``: twins with different masks would fake decay on every variable."""
    generators: list[Any] = []
    for layer in model._flatten_layers(include_self=True, recursive=True):
        generator = getattr(layer, "_random_generator", None)
        if generator is not None and hasattr(generator, "_maybe_init") and all(g is not generator for g in generators):
            generators.append(generator)
    return generators


class TfKerasBackend(TensorFlowRuntime, ProbeBackend):
    """tf_keras models on TensorFlow, with tf_keras or transformers optimizers."""

    name = "tf_keras"

    def __init__(self) -> None:
        self._notes: list[str] = []

    def accepts(self, setup: Any) -> bool:
        return is_tf_keras_object(setup.model)

    def optimizers(self, setup: Any) -> list[Any]:
        return unique_by_id(inner_optimizer(top) for top in listed_optimizers(setup))

    # ---- knobs ----------------------------------------------------------------------
    @contextlib.contextmanager
    def switchable(self, setup: Any) -> Iterator[list[DecaySource]]:
        import tensorflow as tf
        import tf_keras

        sources: list[DecaySource] = []
        restore: list[tuple[Any, str, Any, bool]] = []
        optimizers = self.optimizers(setup)
        labels = positional_labels(optimizers)
        try:
            for optimizer in optimizers:
                # (kind, knob, configured strength, runtime handle) of every knob this optimizer carries
                switched: list[tuple[SourceKind, str, float, VariableKnob]] = []
                if is_legacy(optimizer):
                    knobs = legacy_decay_knobs(optimizer)
                    penalties = legacy_penalty_knobs(optimizer)
                    if not knobs and not penalties:
                        continue
                    scale = tf.Variable(1.0, dtype=tf.float32, trainable=False, name="decay_audit_scale")
                    penalty_scales = {
                        knob: tf.Variable(1.0, dtype=tf.float32, trainable=False, name="decay_audit_penalty")
                        for knob in penalties
                    }
                    had_own = "_prepare_local" in vars(optimizer)
                    restore.append((optimizer, "_prepare_local", vars(optimizer).get("_prepare_local"), had_own))
                    optimizer._prepare_local = _scaled_prepare_local(optimizer, scale, penalty_scales)
                    switched += [(SourceKind.DECOUPLED, k, v, VariableKnob(scale, 1.0)) for k, v in knobs.items()]
                    switched += [
                        (knob_kind(k), k, v, VariableKnob(penalty_scales[k], 1.0)) for k, v in penalties.items()
                    ]
                    if len(knobs) > 1:
                        self._notes.append(f"{type(optimizer).__name__}: {', '.join(knobs)} switched together")
                    if knobs and not hasattr(type(optimizer), "_decay_weights_op"):
                        self._notes.append(
                            f"{type(optimizer).__name__} keeps {', '.join(knobs)}: measured only "
                            "where it reaches _prepare_local's coefficients"
                        )
                else:
                    for knob in ("weight_decay", *COUPLED_KNOBS):
                        strength = nonzero_float(getattr(optimizer, knob, None))
                        if strength is None:
                            continue
                        holder = tf.Variable(strength, dtype=tf.float32, trainable=False, name=f"decay_audit_{knob}")
                        restore.append((optimizer, knob, getattr(optimizer, knob), True))
                        setattr(optimizer, knob, holder)
                        switched.append((knob_kind(knob), knob, strength, VariableKnob(holder, strength)))
                label = labels[id(optimizer)]
                sources += [DecaySource(k, label, knob, v, None, optimizer, h) for k, knob, v, h in switched]
            for generator in _random_generators(setup.model):
                if generator._rng_type == generator.RNG_LEGACY_STATEFUL:
                    # tf.nn.dropout's stateful kernels (tf_keras' default: the tf.random.Generator
                    # path is off) continue their sequence inside a traced step, out of reach of
                    # any snapshot: the twins would draw different masks and fake decay everywhere.
                    # A stateless seed draws the same mask in every twin.
                    for attribute in ("_rng_type", "_built", "_seed", "_generator"):
                        restore.append((generator, attribute, getattr(generator, attribute, None), True))
                    generator._rng_type, generator._built = generator.RNG_STATELESS, False
                    self._notes.append(
                        "tf_keras dropout drew from a fixed stateless seed during the probe, so the "
                        "twins share their masks"
                    )
            for layer in setup.model._flatten_layers(include_self=True, recursive=True):
                losses = getattr(layer, "_callable_losses", None)
                if not losses:
                    continue
                replaced = list(losses)
                for index, callable_loss in enumerate(losses):
                    found = _weight_regularizer(callable_loss)
                    if found is None:
                        continue
                    variable, regularizer = found
                    parts = (
                        regularizer_parts(regularizer, tf_keras.regularizers)
                        if regularizer is not None
                        else [(SourceKind.COUPLED, None, "")]
                    )
                    scales = [
                        tf.Variable(1.0, dtype=tf.float32, trainable=False, name="decay_audit_regularizer")
                        for _ in parts
                    ]
                    if len(parts) == 1:
                        replaced[index] = functools.partial(_scaled_loss, callable_loss, scales[0])
                    else:  # a split L1L2: each part its own scale
                        pairs = [(part, scale) for (_, part, _), scale in zip(parts, scales)]
                        replaced[index] = functools.partial(_scaled_parts_loss, variable, pairs)
                    # the coupled part's own gradient is what penalty_gradients differentiates (as on Keras 3)
                    handles = [
                        _RegularizerKnob(
                            scale, variable, part if len(parts) == 1 or kind is SourceKind.COUPLED else None
                        )
                        for (kind, part, _), scale in zip(parts, scales)
                    ]
                    sources += regularizer_sources(regularizer, parts, handles, variable_path(variable))
                restore.append((layer, "_callable_losses", losses, True))
                layer._callable_losses = replaced
            yield sources
        finally:
            for owner, attribute, original, had_own in reversed(restore):
                if had_own:
                    setattr(owner, attribute, original)
                else:
                    delattr(owner, attribute)

    def set_scale(self, source: DecaySource, scale: float) -> None:
        source.handle.set(scale)

    def learning_rate(self, optimizer: Any) -> float:
        """The next update's rate: legacy ``_decayed_lr`` (schedule at ``iterations``, ``decay=``);
        new-style: the schedule at ``iterations`` (``learning_rate`` lags one step behind)."""
        import tensorflow as tf

        try:
            if is_legacy(optimizer):
                return float(optimizer._decayed_lr(tf.float32))
            rate = optimizer._learning_rate
            if callable(rate):
                rate = rate(optimizer.iterations)
            return float(np.asarray(rate))
        except (TypeError, ValueError, AttributeError):
            return float("nan")

    # ---- state ----------------------------------------------------------------------
    def built(self, setup: Any) -> bool:
        for optimizer in self.optimizers(setup):
            if is_legacy(optimizer):
                if not getattr(optimizer, "_hypers_created", False):
                    return False
            elif not getattr(optimizer, "_built", False):
                return False
        return True

    def build(self, setup: Any) -> None:
        variables = setup.model.trainable_variables
        tops = listed_optimizers(setup)
        if len(tops) == 1:
            optimizer = inner_optimizer(tops[0])
            if is_legacy(optimizer):
                optimizer._create_all_weights(variables)
            elif not getattr(optimizer, "_built", False):
                optimizer.build(variables)
        for generator in _random_generators(setup.model):
            generator._maybe_init()

    def state_variables(self, setup: Any) -> list[Any]:
        model = setup.model
        candidates = list(model.variables)
        for top in listed_optimizers(setup):
            candidates += _variables_of(top) + _variables_of(inner_optimizer(top))
            # LossScaleOptimizer(V3).variables lists the inner optimizer's only; the dynamic loss
            # scale and its good-steps counter live in _loss_scale._weights (tf_keras 2.21).
            candidates += list(getattr(getattr(top, "_loss_scale", None), "_weights", {}).values())
        candidates += [g._generator.state for g in _random_generators(model) if getattr(g, "_generator", None)]
        for metric in getattr(model, "metrics", []) or []:
            candidates += list(getattr(metric, "variables", []))
        return unique_by_id(candidates)

    def trainable(self, setup: Any) -> list[Trainable]:
        return [Trainable(variable_path(v), v) for v in setup.model.trainable_variables]

    def read(self, variables: Sequence[Any]) -> list[np.ndarray]:
        return [np.array(v.numpy(), copy=True) for v in variables]

    def write(self, variables: Sequence[Any], values: Sequence[np.ndarray]) -> None:
        for variable, value in zip(variables, values):
            variable.assign(value)

    # ---- steps ----------------------------------------------------------------------
    def make_step(self, setup: Any) -> Step:
        import tensorflow as tf

        model = setup.model
        if setup.train_step is not None:
            # (model, optimizer, x, y), (x, y) or (batch)
            call = call_hand_written(fresh_trace(setup.train_step, self._notes), model, setup.optimizer)
            return lambda x, y: call(_tensors(x), _tensors(y))
        if getattr(model, "optimizer", None) is not None and (
            model.optimizer is setup.optimizer or setup.optimizer is None
        ):
            jit = bool(getattr(model, "_jit_compile", False))
            compiled = tf.function(lambda x, y: model.train_step((x, y)), jit_compile=jit)
            return lambda x, y: compiled(_tensors(x), _tensors(y))
        reference = self._loss_step(setup, with_penalties=True)
        return lambda x, y: reference(_tensors(x), _tensors(y))

    def make_reference_step(self, setup: Any) -> Step | None:
        if setup.train_step is None:
            return None
        if setup.data_loss is None and getattr(setup.model, "compiled_loss", None) is None:
            self._notes.append(NO_DATA_LOSS_NOTE)
            return None
        reference = self._loss_step(setup, with_penalties=False)
        return lambda x, y: reference(_tensors(x), _tensors(y))

    def _loss_step(self, setup: Any, with_penalties: bool) -> Any:
        import tensorflow as tf

        model, optimizer = setup.model, setup.optimizer
        if setup.data_loss is not None:
            data_loss = setup.data_loss
        elif getattr(model, "compiled_loss", None) is not None:

            def data_loss(y, prediction):  # the compiled loss without regularization_losses
                return model.compiled_loss(y, prediction)
        else:
            import tf_keras

            data_loss = tf_keras.losses.MeanSquaredError()

        @tf.function
        def step(x, y):
            with tf.GradientTape() as tape:
                prediction = model(x, training=True)
                loss = data_loss(y, prediction)
                if with_penalties and model.losses:
                    loss = loss + tf.add_n(model.losses)
            variables = model.trainable_variables
            gradients = tape.gradient(loss, variables)
            optimizer.apply_gradients([(g, v) for g, v in zip(gradients, variables) if g is not None])

        return step

    def penalty_gradients(self, setup: Any, sources: Sequence[DecaySource]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        gradients = {}
        for source in sources:
            handle = source.handle
            if not isinstance(handle, _RegularizerKnob) or handle.regularizer is None or not source.variables:
                continue
            with tf.GradientTape() as tape:
                penalty = handle.regularizer(handle.target)
            gradient = tape.gradient(penalty, handle.target)
            if gradient is not None:
                gradients[source.variables[0]] = np.asarray(tf.convert_to_tensor(gradient), dtype=np.float64)
        return gradients

    def update_every(self, setup: Any) -> int:
        """tf_keras 2.21 optimizers have no gradient accumulation of their own: every step updates."""
        return 1

    # ---- where ----------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, setup: Any, device: str) -> Iterator[None]:
        import tensorflow as tf

        strategy = getattr(setup.model, "distribute_strategy", None)
        if strategy is not None and not isinstance(strategy, type(tf.distribute.get_strategy())):
            with strategy.scope():
                yield
        else:
            with tf.device(f"/{device}:0"):
                yield

    def notes(self, setup: Any) -> list[str]:
        return list(dict.fromkeys(self._notes))


class _RegularizerKnob(VariableKnob):
    """A regularizer's runtime scale, with the weight it penalises (for its own gradient)."""

    def __init__(self, scale: Any, target: Any, regularizer: Any):
        super().__init__(scale, 1.0)
        self.target, self.regularizer = target, regularizer


def _tensors(structure: Any) -> Any:
    import tensorflow as tf

    return tf.nest.map_structure(tf.convert_to_tensor, structure)
