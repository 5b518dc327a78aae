"""Keras 3 on TensorFlow: the probe backend for ``keras.Model`` with ``KERAS_BACKEND=tensorflow``.

Knobs become ``tf.Variable`` s the compiled step reads at run time: the optimizer's
``weight_decay`` attribute is read at trace time by ``_apply_weight_decay``
(keras/src/backend/tensorflow/optimizer.py, Keras 3.15: ``tf.cast(self.weight_decay, ...)``),
so a variable there makes ONE trace serve every twin; a weight regularizer is wrapped in
a :class:`_ScaledRegularizer` that multiplies its penalty by a variable (``0 * penalty``
adds an exact zero to the loss and its gradient).

What it shares with the JAX and torch backends is in ``_keras3``, what it shares with the
tf_keras backend in ``_tf_runtime``. Importing it imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from decay_audit.kinds import KerasBackend
from decay_audit.probe.backends._keras3 import (
    COUPLED_KNOBS,
    DECOUPLED_KNOBS,
    NOT_DECAY,
    Keras3Backend,
    call_hand_written,
    inner_optimizer,
    named_optimizers,
    nonzero_float,
    top_level_optimizers,
    unwrap_optimizer,
    variable_path,
)
from decay_audit.probe.backends._tf_runtime import TensorFlowRuntime, VariableKnob, fresh_trace
from decay_audit.probe.backends.interface import DecaySource, Step


def _scaled_regularizer_class() -> type:
    import keras

    class _ScaledRegularizer(keras.regularizers.Regularizer):
        """The user's regularizer times a runtime scale, for the probe's lifetime only."""

        def __init__(self, regularizer: Any, scale: Any):
            self.regularizer, self.scale = regularizer, scale

        def __call__(self, x: Any) -> Any:
            penalty = self.regularizer(x)
            return penalty * keras.ops.cast(self.scale, penalty.dtype)

    return _ScaledRegularizer


class TensorFlowBackend(TensorFlowRuntime, Keras3Backend):
    """Keras 3 models and optimizers on the TensorFlow backend (what ``model.fit`` runs)."""

    name = KerasBackend.TENSORFLOW.value

    # ---- choosing -------------------------------------------------------------------
    def accepts(self, setup: Any) -> bool:
        import keras

        # Keras 3 objects only: a tf_keras model also has .variables but another optimizer API.
        return keras.backend.backend() == KerasBackend.TENSORFLOW and isinstance(setup.model, keras.layers.Layer)

    def _labels(self, setup: Any) -> dict[int, str]:
        """``AdamW`` alone; ``optimizers[1] AdamW`` (the set-up's list) or
        ``MultiOptimizer.optimizers[1] AdamW`` (Keras' own order) when there are several."""
        tops = named_optimizers(setup)
        labels: dict[int, str] = {}
        for top, where in tops:
            subs = unwrap_optimizer(top)
            for index, optimizer in enumerate(subs):
                name = type(optimizer).__name__
                if len(subs) > 1:
                    name = f"{type(inner_optimizer(top)).__name__}.optimizers[{index}] {name}"
                if len(tops) > 1:
                    name = f"{where} {name}"
                labels.setdefault(id(optimizer), name)
        return labels

    # ---- knobs: tf.Variables the compiled step reads ----------------------------------
    def _check_knobs(self, optimizer: Any, label: str) -> None:
        unknown = sorted(
            name
            for name, value in vars(optimizer).items()
            if ("decay" in name.lower() or "regulariz" in name.lower())
            and not name.startswith("_")
            and name not in DECOUPLED_KNOBS + COUPLED_KNOBS + NOT_DECAY
            and nonzero_float(value) is not None
        )
        if unknown:
            self._notes.append(
                f"{label} has {', '.join(unknown)}, which verify does not know "
                "how to switch: whatever decay it applies is not measured"
            )

    def _optimizer_knob(self, optimizer: Any, knob: str, value: float) -> Any:
        import tensorflow as tf

        variable = tf.Variable(value, dtype=tf.float32, trainable=False, name=f"decay_audit_{knob}")
        setattr(optimizer, knob, variable)
        return VariableKnob(variable, value)

    def _regularizer_knob(self, regularizer: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        scale = tf.Variable(1.0, dtype=tf.float32, trainable=False, name="decay_audit_regularizer")
        return _scaled_regularizer_class()(regularizer, scale), VariableKnob(scale, 1.0)

    def read(self, variables: Sequence[Any]) -> list[np.ndarray]:
        return [np.array(value, copy=True) for value in self._copier(variables)[0]()]

    def snapshot(self, variables: Sequence[Any]) -> Any:
        return self._copier(variables)[0]()

    def restore(self, variables: Sequence[Any], snapshot: Any) -> None:
        self._copier(variables)[1](snapshot)

    def _copier(self, variables: Sequence[Any]) -> tuple[Any, Any]:
        """One compiled read and one compiled assign for a whole list of variables: a few hundred
        eager reads and assigns per twin cost more than the step itself (1.5 M-parameter CNN, 2 CPUs)."""
        import tensorflow as tf

        key = tuple(id(v) for v in variables)
        cached = getattr(self, "_copiers", {}).get(key)
        if cached is not None:
            return cached
        handles = [getattr(v, "value", v) for v in variables]
        distributed = any(
            hasattr(h, "_distributed_container") or type(h).__name__.startswith(("Mirrored", "Sync")) for h in handles
        )
        if distributed:  # cross-replica assign of a host value, as before (tests: MirroredStrategy)

            def read_all() -> list[Any]:
                return [np.array(v.numpy(), copy=True) for v in variables]

            def assign_all(values: Sequence[Any]) -> None:
                for variable, value in zip(variables, values):
                    variable.assign(value)

            pair = (read_all, assign_all)
        else:

            @tf.function(autograph=False)
            def read_graph() -> list[Any]:
                return [tf.identity(h.read_value() if hasattr(h, "read_value") else h) for h in handles]

            @tf.function(autograph=False)
            def assign_graph(values: list[Any]) -> None:
                for handle, value in zip(handles, values):
                    handle.assign(value)

            def read_all() -> list[Any]:
                return read_graph()  # tensors: stay on the device until read() converts them

            def assign_all(values: Sequence[Any]) -> None:
                assign_graph(list(values))

            pair = (read_all, assign_all)
        self._copiers = {**getattr(self, "_copiers", {}), key: pair}
        return pair

    # ---- steps ----------------------------------------------------------------------
    def _strategy(self, setup: Any) -> Any:
        # Inside strategy.scope(), tf.distribute.get_strategy() is that strategy, so the default
        # one is recognised by its class (TensorFlow 2.21: _DefaultDistributionStrategy).
        strategy = getattr(setup.model, "distribute_strategy", None)
        return None if strategy is None or type(strategy).__name__ == "_DefaultDistributionStrategy" else strategy

    def _compile(self, setup: Any, function: Any, jit: bool) -> Step:
        """Under a distribution strategy the step runs in replica context, as ``fit`` runs it."""
        import tensorflow as tf

        strategy = self._strategy(setup)
        if strategy is not None:
            compiled = tf.function(lambda x, y: strategy.run(function, args=(x, y)))
        else:
            compiled = tf.function(function, jit_compile=jit)
        return lambda x, y: compiled(x, y)

    def _jit(self, setup: Any) -> bool:
        """``fit`` compiles with XLA when the model says so (Keras 3 ``jit_compile="auto"``)."""
        jit = getattr(setup.model, "jit_compile", False)
        return bool(jit) and jit != "auto"

    def make_step(self, setup: Any) -> Step:
        import keras

        model = setup.model
        if setup.train_step is not None:
            return call_hand_written(fresh_trace(setup.train_step, self._notes), model, setup.optimizer)
        custom_train_step = type(model).train_step is not keras.Model.train_step
        keras_own = (
            getattr(model, "compiled", False)
            and setup.optimizer is getattr(model, "optimizer", None)
            and setup.data_loss is None
            and (getattr(model, "loss", None) is not None or custom_train_step)
        )
        if keras_own:
            return self._compile(setup, lambda x, y: model.train_step((x, y)), self._jit(setup))
        loss = _loss_function(setup, with_penalties=True)
        optimizer = setup.optimizer
        return self._compile(
            setup,
            lambda x, y: _keras_step(model, [optimizer], loss, x, y),
            self._jit(setup) if getattr(model, "compiled", False) else False,
        )

    def _data_loss_step(self, setup: Any) -> Step:
        model = setup.model
        loss = _loss_function(setup, with_penalties=False)
        tops = top_level_optimizers(setup)
        return self._compile(setup, lambda x, y: _keras_step(model, tops, loss, x, y), False)

    def penalty_gradients(self, setup: Any, sources: Sequence[DecaySource]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        by_path = {variable_path(v): v for v in setup.model.trainable_variables}
        regularized = [
            (s.variables[0], by_path[s.variables[0]])
            for s in sources
            if s.owner == "model" and s.variables and s.variables[0] in by_path
        ]
        if not regularized:
            return {}
        gradients = {}
        for path, variable in regularized:
            wrapper = variable.regularizer
            regularizer = getattr(wrapper, "regularizer", wrapper)
            with tf.GradientTape() as tape:
                penalty = regularizer(variable)
            gradient = tape.gradient(penalty, variable.value if hasattr(variable, "value") else variable)
            if gradient is not None:
                gradients[path] = np.asarray(tf.convert_to_tensor(gradient), dtype=np.float64)
        return gradients

    # ---- where ----------------------------------------------------------------------
    @contextlib.contextmanager
    def scope(self, setup: Any, device: str) -> Iterator[None]:
        import tensorflow as tf

        strategy = self._strategy(setup)
        if strategy is not None:
            with strategy.scope():
                yield
        else:
            with tf.device(f"/{device}:0"):
                yield


def _loss_function(setup: Any, with_penalties: bool) -> Any:
    model = setup.model
    if setup.data_loss is not None:

        def loss(x, y, y_pred):
            value = setup.data_loss(y, y_pred)
            if with_penalties and model.losses:
                value = value + sum(model.losses)
            return value

        return loss
    if getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        if with_penalties:
            return lambda x, y, y_pred: model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        return lambda x, y, y_pred: model._compile_loss(y, y_pred)
    import keras

    mse = keras.losses.MeanSquaredError()

    def default_loss(x, y, y_pred):
        # A backbone's outputs are a dict (keras_hub: sequence_output, pooled_output): one MSE per output.
        value = sum(mse(t, p) for t, p in zip(keras.tree.flatten(y), keras.tree.flatten(y_pred)))
        return value + sum(model.losses) if with_penalties and model.losses else value

    return default_loss


def _owner_of(optimizers: list[Any], variable: Any) -> Any:
    """The optimizer built on ``variable`` (several optimizers each own a subset)."""
    if len(optimizers) == 1:
        return optimizers[0]
    for optimizer in optimizers:
        indices = getattr(inner_optimizer(optimizer), "_trainable_variables_indices", None) or {}
        try:
            if inner_optimizer(optimizer)._var_key(variable) in indices:
                return optimizer
        except AttributeError:
            continue
    return optimizers[0]


def _keras_step(model: Any, optimizers: list[Any], loss_fn: Any, x: Any, y: Any) -> None:
    """Keras 3's ``train_step`` (TensorFlow backend) with the probe's loss, each variable to its optimizer."""
    import tensorflow as tf

    with tf.GradientTape() as tape:
        y_pred = model(x, training=True)
        loss = loss_fn(x, y, y_pred)
        scaled = optimizers[0].scale_loss(loss) if hasattr(optimizers[0], "scale_loss") else loss
    variables = model.trainable_variables
    gradients = tape.gradient(scaled, variables)
    groups: dict[int, tuple[Any, list[Any]]] = {}
    for gradient, variable in zip(gradients, variables):
        if gradient is None:
            continue
        owner = _owner_of(optimizers, variable)
        groups.setdefault(id(owner), (owner, []))[1].append((gradient, variable))
    for owner, pairs in groups.values():
        owner.apply_gradients(pairs)
