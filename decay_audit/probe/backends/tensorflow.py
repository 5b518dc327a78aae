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
from dataclasses import dataclass
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

    def current(self, variables: Sequence[Any]) -> Sequence[Any]:
        return self._copier(variables)[0]()  # tensors: np.asarray reads a host tensor without a copy

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
                values = []
                for variable, handle in zip(variables, handles):
                    replicas = [np.asarray(r) for r in _replica_values(handle)]
                    for replica in replicas[1:]:
                        if replica.shape == replicas[0].shape and not np.array_equal(replica, replicas[0]):
                            path = variable_path(variable)
                            difference = float(np.max(np.abs(replica.astype(np.float64) - replicas[0])))
                            self._disagreements[path] = max(difference, self._disagreements.get(path, 0.0))
                    values.append(np.array(replicas[0], copy=True))
                return values

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
    def __init__(self) -> None:
        super().__init__()
        self._disagreements: dict[str, float] = {}

    def replica_disagreements(self) -> dict[str, float]:
        return dict(self._disagreements)

    def placement(self, setup: Any) -> str | None:
        """Where a distribution strategy runs the step, for the report's header (None without one):
        ``2 replicas (MirroredStrategy on CPU:0, CPU:1)``."""
        strategy = self._strategy(setup)
        if strategy is None:
            return None
        devices = [d.rsplit("device:", 1)[-1] for d in getattr(strategy.extended, "worker_devices", ())]
        count = int(getattr(strategy, "num_replicas_in_sync", len(devices)) or len(devices))
        where = f" on {', '.join(devices)}" if devices else ""
        name = _STRATEGY_NAMES.get(type(strategy).__name__, type(strategy).__name__)
        return f"{count} replica{'s' if count != 1 else ''} ({name}{where})"

    def refuse(self, setup: Any) -> str | None:
        """Why this set-up's strategy cannot be probed in one process, naming what to run instead."""
        strategy = self._strategy(setup)
        name = type(strategy).__name__ if strategy is not None else ""
        name = _STRATEGY_NAMES.get(name, name)
        workers = int(getattr(getattr(strategy, "extended", None), "_num_workers", 1) or 1)
        if workers > 1 or "ParameterServer" in name or "TPU" in name:
            return (
                f"{name} needs its other workers and verify probes one process: verify the same "
                "set-up under tf.distribute.MirroredStrategy on this machine's devices (which variables "
                "decay does not depend on the number of workers)"
            )
        return None

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


_STRATEGY_NAMES = {"CollectiveAllReduceStrategy": "MultiWorkerMirroredStrategy"}
"""TensorFlow 2.21 class name -> the public name users construct (``tf.distribute.MultiWorkerMirroredStrategy``)."""


def _replica_values(handle: Any) -> list[Any]:
    """Each replica's value of a distributed variable (one value for a plain one)."""
    strategy = getattr(handle, "_distribute_strategy", None)
    if strategy is not None:
        try:
            return [r.numpy() for r in strategy.experimental_local_results(handle)]
        except (AttributeError, ValueError, TypeError):
            pass
    return [handle.numpy()]


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


# ---- a stale traced step: what fit would run next --------------------------------------------


@dataclass(frozen=True)
class StaleStep:
    """``fit``'s cached step, traced while layers now frozen were trainable (Keras 3.15 TensorFlow
    trainer: ``make_train_function`` returns ``self.train_function`` unless ``compile()`` reset it, so
    ``layer.trainable = False`` after ``fit`` leaves the old program running: it keeps updating,
    decaying and, for BatchNormalization, re-estimating the statistics of the frozen layers)."""

    layers: tuple[str, ...]
    """The outermost frozen layers the traced step still updates (``base``)."""
    variables: tuple[str, ...]
    """Paths of the frozen variables the traced step writes, statistics included."""
    written: frozenset[str]
    """Every variable path the traced step writes."""


_WRITES = ("Assign", "ResourceApply", "ResourceScatter", "ResourceSparseApply")
"""Graph ops that write a resource variable (its handle is the op's first input)."""


def _traced_functions(function: Any, depth: int = 0, seen: set[int] | None = None) -> list[Any]:
    """The ``tf.function`` objects behind ``model.train_function`` (Keras wraps them in plain Python
    functions: ``_autoconvert_optionals``), found through closures."""
    seen = set() if seen is None else seen
    if id(function) in seen or depth > 4:
        return []
    seen.add(id(function))
    found = []
    if hasattr(function, "_list_all_concrete_functions"):
        found.append(function)
        inner = getattr(function, "python_function", None)
        if inner is not None:
            found += _traced_functions(inner, depth + 1, seen)
    for cell in getattr(function, "__closure__", None) or ():
        try:
            content = cell.cell_contents
        except ValueError:
            continue
        if callable(content):
            found += _traced_functions(content, depth + 1, seen)
    return found


def _written_paths(model: Any, concrete: Any) -> set[str]:
    """Variable paths a traced graph writes: each write op's resource input followed back through
    nested function calls, conditionals and loops to the variable the graph captured."""
    graph = concrete.graph
    graph_def = graph.as_graph_def()
    library = {function.signature.name: function for function in graph_def.library.function}
    by_handle = {}
    for variable in model.variables:
        handle = getattr(getattr(variable, "value", variable), "handle", None)
        if handle is not None:
            by_handle[id(handle)] = variable_path(variable)
    top = {
        internal.op.name: by_handle[id(external)] for external, internal in graph.captures if id(external) in by_handle
    }
    written: set[str] = set()

    def node_of(reference: str) -> str:
        return reference.lstrip("^").split(":")[0]

    def walk(nodes: Any, names: dict[str, str], depth: int) -> None:
        if depth > 16:
            return
        for node in nodes:
            inputs = [i for i in node.input if not i.startswith("^")]
            if node.op.startswith(_WRITES) and inputs and node_of(inputs[0]) in names:
                written.add(names[node_of(inputs[0])])
            for attribute in node.attr.values():
                called = [attribute.func.name] if attribute.func.name else [f.name for f in attribute.list.func]
                for name in called:
                    function = library.get(name)
                    if function is None:
                        continue
                    passed = inputs[1:] if node.op in ("If", "StatelessIf") else inputs
                    arguments = [argument.name for argument in function.signature.input_arg]
                    inner = {a: names[node_of(i)] for a, i in zip(arguments, passed) if node_of(i) in names}
                    if inner:
                        walk(function.node_def, inner, depth + 1)

    walk(graph_def.node, top, 0)
    return written


def stale_train_step(model: Any) -> StaleStep | None:
    """The frozen layers ``model.train_function`` still updates, or None when it is not stale (not
    traced yet, reset by ``compile()``, or traced with the trainability the model has now)."""
    function = getattr(model, "train_function", None)
    if function is None or not hasattr(model, "_flatten_layers"):
        return None
    written: set[str] = set()
    for traced in _traced_functions(function):
        for concrete in traced._list_all_concrete_functions():
            written |= _written_paths(model, concrete)
    frozen_written = {
        variable_path(v)
        for layer in model._flatten_layers()
        for v in getattr(layer, "_trainable_variables", [])
        if not v.trainable and variable_path(v) in written
    }
    if not frozen_written:
        return None
    layers: list[Any] = []

    def visit(layer: Any) -> None:
        for sub in getattr(layer, "_layers", []):
            mine = {variable_path(v) for v in sub.variables}
            if not sub.trainable and mine & frozen_written:
                layers.append(sub)
            else:
                visit(sub)

    visit(model)
    statistics = {
        variable_path(v) for layer in layers for v in layer.non_trainable_variables if variable_path(v) in written
    }
    return StaleStep(
        tuple(layer.name for layer in layers),
        tuple(sorted(frozen_written | statistics)),
        frozenset(written),
    )


@contextlib.contextmanager
def trainability_as_traced(model: Any, stale: StaleStep) -> Iterator[None]:
    """The frozen layers trainable again, as they were when ``fit`` traced its step, for the probe's
    lifetime: the probe's fresh trace (with the decay knobs as runtime values) then updates the same
    variables and runs BatchNormalization in training mode, as the stale program does. A sub-layer
    whose variables the stale step does not write stays frozen. Every flag is put back exactly."""
    layers = [layer for layer in model._flatten_layers() if layer.name in stale.layers]
    saved_layers = [(sub, sub._trainable) for layer in layers for sub in layer._flatten_layers()]
    saved_variables = [(v, v.trainable) for layer in layers for v in layer.variables]
    try:
        for layer in layers:
            layer.trainable = True
            for sub in layer._flatten_layers(include_self=False):
                own = list(getattr(sub, "_trainable_variables", []))
                if own and not any(variable_path(v) in stale.written for v in own):
                    sub.trainable = False
        yield
    finally:
        for sub, flag in saved_layers:
            sub._trainable = flag
        for variable, flag in saved_variables:
            variable.trainable = flag
