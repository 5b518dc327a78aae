"""Keras 3 on TensorFlow: the probe backend for ``keras.Model`` with ``KERAS_BACKEND=tensorflow``.

Knobs become ``tf.Variable`` s the compiled step reads at run time: the optimizer's
``weight_decay`` attribute is read at trace time by ``_apply_weight_decay``
(keras/src/backend/tensorflow/optimizer.py, Keras 3.15: ``tf.cast(self.weight_decay, ...)``),
so a variable there makes ONE trace serve every twin; a weight regularizer is wrapped in
a :class:`_ScaledRegularizer` that multiplies its penalty by a variable (``0 * penalty``
adds an exact zero to the loss and its gradient).

This module also holds what other backends share with it, written once: :class:`Keras3Backend`,
the base of the JAX and torch backends too (``keras3_eager``), which differ only in how a knob
holds its runtime value; and the helpers and :class:`TensorFlowRuntime` (device, determinism)
that the tf_keras backend uses as well. Importing it imports neither TensorFlow nor Keras.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from decay_audit.probe.backends.interface import DecaySource, ProbeBackend, SourceKind, Step, Trainable

DECOUPLED_KNOBS = ("weight_decay", "adam_weight_decay")
"""Optimizer attributes that shrink weights directly, read from keras/src/optimizers/*.py (Keras 3.15):
every optimizer's base-class ``weight_decay``; Muon's ``adam_weight_decay`` for the variables it
updates with AdamW (non-matrix ones, embeddings, excluded layers)."""
COUPLED_KNOBS = ("l1_regularization_strength", "l2_regularization_strength", "l2_shrinkage_regularization_strength")
"""Penalties inside an optimizer's own update rule (Ftrl): they act like a penalty gradient, on every
variable the optimizer updates, ignoring ``exclude_from_weight_decay``."""
NOT_DECAY = ("beta_2_decay",)
"""Optimizer arguments whose name says decay but which do not decay weights (Adafactor's second-moment
decay exponent). tests pin that every ``keras.optimizers`` argument naming decay or regularization is
in one of these three tuples."""


def inner_optimizer(optimizer: Any) -> Any:
    """LossScaleOptimizer (what compile() wraps under mixed_float16) holds the real one."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def _unwrap(optimizer: Any) -> list[Any]:
    inner = inner_optimizer(optimizer)
    subs = getattr(inner, "optimizers", None)  # keras.optimizers.MultiOptimizer
    if isinstance(subs, (list, tuple)) and subs and type(inner).__name__ == "MultiOptimizer":
        return [inner_optimizer(s) for s in subs]
    return [inner]


def listed_optimizers(setup: Any) -> list[Any]:
    """The set-up's ``optimizer`` then its ``optimizers`` (each object once), as the user gave them
    (also tf_keras' top-level optimizers)."""
    listed = list(getattr(setup, "optimizers", ()) or ())
    if setup.optimizer is not None and all(o is not setup.optimizer for o in listed):
        listed.insert(0, setup.optimizer)
    return listed


def _named_optimizers(setup: Any) -> list[tuple[Any, str]]:
    """The optimizer objects the set-up's step calls (wrappers included), each with where it was
    found: the set-up's ``optimizer``/``optimizers``, then optimizers a subclassed model holds as
    attributes for its own ``train_step`` (``self.head_optimizer.apply(...)``)."""
    import keras

    listed = listed_optimizers(setup)
    named = [(o, f"optimizers[{i}]") for i, o in enumerate(listed)]
    seen = {id(o) for o in listed}
    for attribute, value in sorted(vars(setup.model).items()):
        candidates = value if isinstance(value, (list, tuple)) else [value]
        for position, candidate in enumerate(candidates):
            if isinstance(candidate, keras.optimizers.Optimizer) and id(candidate) not in seen:
                seen.add(id(candidate))
                suffix = f"[{position}]" if isinstance(value, (list, tuple)) else ""
                named.append((candidate, f"model.{attribute.lstrip('_')}{suffix}"))
    return named


def top_level_optimizers(setup: Any) -> list[Any]:
    """The optimizer objects the set-up's step calls (wrappers included), in order."""
    return [optimizer for optimizer, _ in _named_optimizers(setup)]


def variable_path(variable: Any) -> str:
    path = getattr(variable, "path", None) or variable.name
    return path[:-2] if path.endswith(":0") else path


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number != 0.0 else None


def unique_by_id(items: Any) -> list[Any]:
    """``items`` in order, each object once (variables and optimizers compare by identity)."""
    seen, result = set(), []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            result.append(item)
    return result


def positional_labels(optimizers: Sequence[Any]) -> dict[int, str]:
    """``AdamW`` alone, ``optimizers[1] AdamW`` when there are several (by ``id``)."""
    return {id(o): (type(o).__name__ if len(optimizers) == 1 else f"optimizers[{i}] {type(o).__name__}")
            for i, o in enumerate(optimizers)}


class _Knob:
    """A runtime strength: ``variable`` holds ``value * scale`` (also tf_keras' knob)."""

    def __init__(self, variable: Any, value: float):
        self.variable, self.value = variable, value

    def set(self, scale: float) -> None:
        self.variable.assign(self.value * scale)


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


def _regularizer_text(regularizer: Any) -> tuple[str, float]:
    config = {}
    try:
        config = regularizer.get_config() or {}
    except (AttributeError, NotImplementedError, TypeError):
        pass
    numbers = {k: float(v) for k, v in config.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    text = ", ".join(f"{k}={v:g}" for k, v in numbers.items())
    return f"{type(regularizer).__name__}({text})", max(numbers.values(), default=float("nan"))


NO_DATA_LOSS_NOTE = ("hand-written train_step without data_loss: penalties written into the step itself "
                     "are not measured (give data_loss); optimizer decay and regularizers are")
"""What verify says when a hand-written step has no data loss to build its reference from (every backend)."""


def fresh_trace(step: Any, notes: list[str]) -> Any:
    """A hand-written ``tf.function`` step traced before verify holds the decay knobs as constants
    in its graph: a fresh trace of the same Python code reads the probe's knobs (Keras 3 and tf_keras)."""
    traced = getattr(step, "experimental_get_tracing_count", None)
    if callable(traced) and traced() > 0 and hasattr(step, "python_function"):
        import tensorflow as tf

        step = tf.function(step.python_function)
        notes.append("the hand-written train_step had been traced before verify: probed through a "
                     "fresh trace of its Python function")
    return step


class Keras3Backend(ProbeBackend):
    """What every Keras 3 backend shares: the optimizers (unwrapped), the decay knobs they and the
    weight regularizers carry, the state to snapshot, the reference step's guard.

    How a knob becomes a runtime value is the backend's own: on TensorFlow a ``tf.Variable`` the
    compiled step reads (:class:`TensorFlowBackend`), on JAX and torch a Python number in the
    attribute (``keras3_eager``); each subclass says so in :meth:`_optimizer_knob` and
    :meth:`_regularizer_knob`."""

    def __init__(self) -> None:
        self._notes: list[str] = []
        self._knobs: list[Any] = []  # the handles switchable() installed (JAX keys its compilations on them)

    def optimizers(self, setup: Any) -> list[Any]:
        return unique_by_id(optimizer for top in top_level_optimizers(setup) for optimizer in _unwrap(top))

    def _labels(self, setup: Any) -> dict[int, str]:
        """Each optimizer's label for the report, by ``id``."""
        return positional_labels(self.optimizers(setup))

    # ---- knobs ----------------------------------------------------------------------
    @contextlib.contextmanager
    def switchable(self, setup: Any) -> Iterator[list[DecaySource]]:
        sources: list[DecaySource] = []
        restore: list[tuple[Any, str, Any]] = []
        labels = self._labels(setup)
        try:
            for optimizer in self.optimizers(setup):
                self._check_knobs(optimizer, labels[id(optimizer)])
                for kind, knobs in ((SourceKind.DECOUPLED, DECOUPLED_KNOBS), (SourceKind.COUPLED, COUPLED_KNOBS)):
                    for knob in knobs:
                        if not hasattr(optimizer, knob):
                            continue
                        original = getattr(optimizer, knob)
                        value = _number(original)
                        if value is None:
                            continue
                        restore.append((optimizer, knob, original))
                        handle = self._optimizer_knob(optimizer, knob, value)
                        self._knobs.append(handle)
                        sources.append(DecaySource(kind, labels[id(optimizer)], knob, value, None, optimizer, handle))
            for variable in setup.model.trainable_variables:
                regularizer = getattr(variable, "regularizer", None)
                if regularizer is None:
                    continue
                wrapper, handle = self._regularizer_knob(regularizer)
                restore.append((variable, "regularizer", regularizer))
                variable.regularizer = wrapper
                self._knobs.append(handle)
                text, value = _regularizer_text(regularizer)
                sources.append(DecaySource(SourceKind.COUPLED, "model", f"regularizer {text}", value,
                                           (variable_path(variable),), None, handle))
            yield sources
        finally:
            self._knobs = []
            for owner, attribute, original in reversed(restore):
                setattr(owner, attribute, original)

    def _check_knobs(self, optimizer: Any, label: str) -> None:
        """Note what the optimizer carries that :meth:`switchable` cannot switch (default: nothing)."""

    def _optimizer_knob(self, optimizer: Any, knob: str, value: float) -> Any:
        """Put a runtime value of ``value`` in ``optimizer.<knob>``; return its handle (``set(scale)``)."""
        raise NotImplementedError

    def _regularizer_knob(self, regularizer: Any) -> tuple[Any, Any]:
        """``(wrapper, handle)``: the regularizer times a runtime scale, and the scale's handle."""
        raise NotImplementedError

    def set_scale(self, source: DecaySource, scale: float) -> None:
        source.handle.set(scale)

    def learning_rate(self, optimizer: Any) -> float:
        """Keras 3's ``learning_rate`` property evaluates a schedule at ``iterations``: the next update's."""
        try:
            return float(np.asarray(optimizer.learning_rate))
        except (TypeError, ValueError, AttributeError):
            return float("nan")

    # ---- state ----------------------------------------------------------------------
    def built(self, setup: Any) -> bool:
        return all(getattr(o, "built", False) for o in top_level_optimizers(setup))

    def build(self, setup: Any) -> None:
        """A single optimizer is built on every trainable variable, as ``fit`` builds it; several
        optimizers each own a subset only their step knows, so they are left to a warm-up step."""
        tops = top_level_optimizers(setup)
        if len(tops) == 1 and not getattr(tops[0], "built", False):
            tops[0].build(setup.model.trainable_variables)

    def state_variables(self, setup: Any) -> list[Any]:
        candidates = list(setup.model.variables)
        for top in top_level_optimizers(setup):
            candidates += list(top.variables)
            for optimizer in _unwrap(top):
                candidates += list(optimizer.variables)
        candidates += list(getattr(setup.model, "metrics_variables", []) or [])
        return unique_by_id(candidates)

    def trainable(self, setup: Any) -> list[Trainable]:
        return [Trainable(variable_path(v), v) for v in setup.model.trainable_variables]

    def write(self, variables: Sequence[Any], values: Sequence[np.ndarray]) -> None:
        for variable, value in zip(variables, values):
            variable.assign(value)

    # ---- steps ----------------------------------------------------------------------
    def make_reference_step(self, setup: Any) -> Step | None:
        if setup.train_step is None:
            return None
        model = setup.model
        if setup.data_loss is None and not (getattr(model, "compiled", False) and getattr(model, "loss", None)):
            self._notes.append(NO_DATA_LOSS_NOTE)
            return None
        return self._data_loss_step(setup)

    def _data_loss_step(self, setup: Any) -> Step:
        """The set-up's update with its data loss alone (the reference for a hand-written step)."""
        raise NotImplementedError

    def update_every(self, setup: Any) -> int:
        """Keras 3 gradient accumulation (``gradient_accumulation_steps``): decay only on updating steps."""
        return max([int(getattr(o, "gradient_accumulation_steps", None) or 1) for o in self.optimizers(setup)] or [1])

    def notes(self, setup: Any) -> list[str]:
        return list(dict.fromkeys(self._notes))


class TensorFlowRuntime:
    """Device and determinism on TensorFlow, for the Keras 3 and the tf_keras backends (a mixin:
    put it before the :class:`ProbeBackend` base; it writes to ``self._notes``)."""

    _notes: list[str]

    def device(self, requested: str | None) -> str:
        import tensorflow as tf

        if requested is not None:
            return requested.upper()
        return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"

    @contextlib.contextmanager
    def determinism(self) -> Iterator[None]:
        """TensorFlow 2.21 can switch op determinism on but offers no public way back, so it is
        switched on only where kernels can differ between runs (a visible GPU)."""
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            tf.config.experimental.enable_op_determinism()
            self._notes.append("TensorFlow op determinism switched on for the probe (GPU)")
        yield


class TensorFlowBackend(TensorFlowRuntime, Keras3Backend):
    """Keras 3 models and optimizers on the TensorFlow backend (what ``model.fit`` runs)."""

    name = "tensorflow"

    # ---- choosing -------------------------------------------------------------------
    def accepts(self, setup: Any) -> bool:
        import keras

        # Keras 3 objects only: a tf_keras model also has .variables but another optimizer API.
        return keras.backend.backend() == "tensorflow" and isinstance(setup.model, keras.layers.Layer)

    def _labels(self, setup: Any) -> dict[int, str]:
        """``AdamW`` alone; ``optimizers[1] AdamW`` (the set-up's list) or
        ``MultiOptimizer.optimizers[1] AdamW`` (Keras' own order) when there are several."""
        tops = _named_optimizers(setup)
        labels: dict[int, str] = {}
        for top, where in tops:
            subs = _unwrap(top)
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
        unknown = sorted(name for name, value in vars(optimizer).items()
                         if ("decay" in name.lower() or "regulariz" in name.lower())
                         and not name.startswith("_") and name not in DECOUPLED_KNOBS + COUPLED_KNOBS + NOT_DECAY
                         and _number(value) is not None)
        if unknown:
            self._notes.append(f"{label} has {', '.join(unknown)}, which verify does not know "
                               "how to switch: whatever decay it applies is not measured")

    def _optimizer_knob(self, optimizer: Any, knob: str, value: float) -> Any:
        import tensorflow as tf

        variable = tf.Variable(value, dtype=tf.float32, trainable=False, name=f"decay_audit_{knob}")
        setattr(optimizer, knob, variable)
        return _Knob(variable, value)

    def _regularizer_knob(self, regularizer: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        scale = tf.Variable(1.0, dtype=tf.float32, trainable=False, name="decay_audit_regularizer")
        return _scaled_regularizer_class()(regularizer, scale), _Knob(scale, 1.0)

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
        distributed = any(hasattr(h, "_distributed_container") or type(h).__name__.startswith(("Mirrored", "Sync"))
                          for h in handles)
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
            return _call_hand_written(fresh_trace(setup.train_step, self._notes), model, setup.optimizer)
        custom_train_step = type(model).train_step is not keras.Model.train_step
        keras_own = (getattr(model, "compiled", False) and setup.optimizer is getattr(model, "optimizer", None)
                     and setup.data_loss is None and (getattr(model, "loss", None) is not None or custom_train_step))
        if keras_own:
            return self._compile(setup, lambda x, y: model.train_step((x, y)), self._jit(setup))
        loss = _loss_function(setup, with_penalties=True)
        optimizer = setup.optimizer
        return self._compile(setup, lambda x, y: _keras_step(model, [optimizer], loss, x, y),
                             self._jit(setup) if getattr(model, "compiled", False) else False)

    def _data_loss_step(self, setup: Any) -> Step:
        model = setup.model
        loss = _loss_function(setup, with_penalties=False)
        tops = top_level_optimizers(setup)
        return self._compile(setup, lambda x, y: _keras_step(model, tops, loss, x, y), False)

    def penalty_gradients(self, setup: Any, sources: Sequence[DecaySource]) -> dict[str, np.ndarray]:
        import tensorflow as tf

        by_path = {variable_path(v): v for v in setup.model.trainable_variables}
        regularized = [(s.variables[0], by_path[s.variables[0]]) for s in sources
                       if s.owner == "model" and s.variables and s.variables[0] in by_path]
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


def _call_hand_written(step: Any, model: Any, optimizer: Any) -> Step:
    """``train_step(model, optimizer, x, y)`` as documented; a closure over its model and
    optimizer may also take ``(x, y)`` or one ``(x, y)`` batch (Model Garden style)."""
    import inspect

    try:
        parameters = inspect.signature(getattr(step, "python_function", step)).parameters.values()
        positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                      and p.default is p.empty]
        count = None if any(p.kind is p.VAR_POSITIONAL for p in parameters) else len(positional)
    except (TypeError, ValueError):
        count = None
    if count == 2:
        return lambda x, y: step(x, y)
    if count == 1:
        return lambda x, y: step((x, y))
    return lambda x, y: step(model, optimizer, x, y)


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
