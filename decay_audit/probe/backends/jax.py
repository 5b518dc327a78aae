"""Keras 3 on JAX: ``JAXTrainer.train_step(state, data)`` under ``jax.jit``, as ``fit`` runs it.

JAX reads ``XLA_FLAGS`` once, when its first backend starts, so GPU op determinism
(``--xla_gpu_deterministic_ops=true``) is requested before Keras is imported
(:func:`request_xla_determinism`, called by ``verify --backend jax``); the core also
repeats the real step to calibrate the noise floor, whatever the flags.

A hand-written step that calls a ``jax.jit``-compiled function (the keras.io "custom training loop
in JAX" guide: ``stateless_call`` and ``optimizer.stateless_apply`` inside ``@jax.jit``) read
``optimizer.weight_decay`` as a constant when it was first traced: every twin would rerun that
program. For the probe's lifetime each such function (the step itself, or one it reaches through
its closure or globals) is replaced by ``jax.jit`` of its undecorated ``__wrapped__``, compiled once
per set of knob values like ``fit``'s own step (:meth:`JaxBackend.make_step`), and put back afterwards.
The re-jit keeps the options the user's ``jax.jit`` was given (``static_argnums``, ``donate_argnums``,
shardings...), read from the jitted function (:func:`jit_options`); options that cannot be carried over
stop verify with one line naming the function.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from decay_audit.errors import UsageError
from decay_audit.kinds import KerasBackend
from decay_audit.probe.backends._keras3 import call_hand_written
from decay_audit.probe.backends.interface import DecaySource, Step
from decay_audit.probe.backends.keras3_eager import Keras3EagerBackend

XLA_DETERMINISM = "--xla_gpu_deterministic_ops=true"


def request_xla_determinism() -> None:
    """Add the XLA flag for deterministic GPU ops, before JAX starts (harmless on CPU)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_DETERMINISM}".strip()


def _devices(mesh: Any) -> list[Any]:
    return list(np.asarray(getattr(mesh, "devices", [])).reshape(-1)) if mesh is not None else []


def _store(holder: Any, key: Any, value: Any) -> None:
    if key is None:
        holder.cell_contents = value
    else:
        holder[key] = value


def _assign(references: Sequence[Any], values: Sequence[Any]) -> None:
    for reference, value in zip(references, values):
        reference.assign(value)


def _is_jitted(value: Any) -> bool:
    """A ``jax.jit`` result: callable, with the undecorated function in ``__wrapped__`` and ``lower``."""
    return callable(value) and hasattr(value, "__wrapped__") and hasattr(value, "lower") and hasattr(value, "trace")


_CARRIED_OPTIONS = ("static_argnums", "static_argnames", "donate_argnums", "donate_argnames")
"""``jax.jit`` options kept as tuples in the jitted function's ``_jit_info`` (jax 0.10.2's ``PjitInfo``)
and given back to ``jax.jit`` as they are."""


def jit_options(jitted: Any, name: str) -> dict[str, Any] | None:
    """The keyword arguments the user's ``jax.jit`` call was given, read from ``jitted._jit_info``
    (jax 0.10.2: a ``PjitInfo`` holding each option; jax exposes no public accessor), so the probe's
    re-jit compiles the same program: a static argument dropped would be traced as an array and fail;
    a donation dropped would change nothing the probe reads, but is kept all the same. None when this
    jax keeps no ``_jit_info`` (the options are then unknown). A layout option cannot be rebuilt from
    what jax keeps: :class:`UsageError` naming the function."""
    info = getattr(jitted, "_jit_info", None)
    if info is None:
        return None
    import jax

    options: dict[str, Any] = {}
    for option in _CARRIED_OPTIONS:
        value = tuple(getattr(info, option, ()) or ())
        if value:
            options[option] = value
    for option in ("keep_unused", "inline"):
        if getattr(info, option, False):
            options[option] = True
    for option in ("device", "backend"):
        if getattr(info, option, None) is not None:
            options[option] = getattr(info, option)
    if getattr(info, "compiler_options_kvs", ()):
        options["compiler_options"] = dict(info.compiler_options_kvs)
    for option in ("in_shardings", "out_shardings"):
        leaves = tuple(getattr(info, f"{option}_leaves", ()) or ())
        if any(type(leaf).__name__ != "UnspecifiedValue" for leaf in leaves):
            options[option] = jax.tree_util.tree_unflatten(getattr(info, f"{option}_treedef"), leaves)
    if any(
        leaf is not None for option in ("in_layouts", "out_layouts") for leaf in getattr(info, f"{option}_leaves", ())
    ):
        raise UsageError(
            f"jax.jit function {name!r}",
            "it was jitted with in_layouts/out_layouts, which verify cannot carry into the re-trace it "
            "needs to switch the decay knobs: verify the same step jitted without layouts",
        )
    return options


def _jitted_slots(function: Any, depth: int = 2) -> list[tuple[Any, Any, str]]:
    """Where ``function`` reaches a jitted function: ``(holder, key, name)`` with holder a closure
    cell (key None) or a globals dict, looked into ``depth`` levels of plain Python functions
    (a step that calls a helper that calls the jitted step)."""
    slots: list[tuple[Any, Any, str]] = []
    seen: set[int] = set()

    def visit(current: Any, level: int) -> None:
        code = getattr(current, "__code__", None)
        if code is None or id(current) in seen:
            return
        seen.add(id(current))
        places: list[tuple[Any, Any, str, Any]] = []
        for name, cell in zip(code.co_freevars, getattr(current, "__closure__", None) or ()):
            try:
                places.append((cell, None, name, cell.cell_contents))
            except ValueError:  # an empty cell
                continue
        namespace = getattr(current, "__globals__", {})
        places += [(namespace, name, name, namespace[name]) for name in code.co_names if name in namespace]
        for holder, key, name, value in places:
            if _is_jitted(value):
                slots.append((holder, key, name))
            elif level < depth and callable(value) and not isinstance(value, type):
                visit(value, level + 1)

    visit(function, 0)
    return slots


def _unknown_options_guard(compiled: Any, name: str) -> Any:
    """The re-jit of a function whose ``jax.jit`` options this jax does not expose: its first call
    failing is most likely an option the re-jit lacks (a static argument traced as an array), said
    in one line naming the function; once a call succeeded, failures are the step's own."""
    succeeded = False

    def call(*args: Any, **kwargs: Any) -> Any:
        nonlocal succeeded
        if succeeded:
            return compiled(*args, **kwargs)
        try:
            result = compiled(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - jax raises many types while tracing
            import jax

            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise UsageError(
                f"jax.jit function {name!r}",
                f"jax {jax.__version__} does not say which options it was jitted with, and jitted again "
                f"without them it fails ({first}): verify the same step jitted without options",
            ) from exc
        succeeded = True
        return result

    return call


class JaxBackend(Keras3EagerBackend):
    name = KerasBackend.JAX.value

    def __init__(self) -> None:
        super().__init__()
        self._put_back: list[tuple[Any, Any, Any]] = []  # (holder, key, the user's jitted function)
        self._disagreements: dict[str, float] = {}

    @contextlib.contextmanager
    def switchable(self, setup: Any) -> Iterator[list[DecaySource]]:
        """The knobs, and on exit the user's jitted functions put back where :meth:`make_step` found them."""
        try:
            with super().switchable(setup) as sources:
                yield sources
        finally:
            for holder, key, original in reversed(self._put_back):
                _store(holder, key, original)
            self._put_back = []

    def make_step(self, setup: Any) -> Step:
        """A hand-written step: every jitted function it reaches is re-traced from ``__wrapped__``
        per set of knob values, so the knobs are runtime values of the step the twins run."""
        step = setup.train_step
        if step is None:
            return super().make_step(setup)
        if _is_jitted(step):
            step = self._retraced(step, getattr(step, "__name__", "train_step"))
        for holder, key, name in _jitted_slots(step):
            original = holder.cell_contents if key is None else holder[key]
            if not _is_jitted(original):  # reached twice: already replaced
                continue
            self._put_back.append((holder, key, original))
            _store(holder, key, self._retraced(original, name))
            self._notes.append(
                f"the jax.jit function {name!r} the step calls bakes optimizer knobs in when it is traced: "
                "probed through jax.jit of its undecorated function, traced once per set of knob values"
            )
        return call_hand_written(step, setup.model, setup.optimizer)

    def _retraced(self, jitted: Any, name: str) -> Any:
        """``jax.jit`` of the undecorated function with the user's options (:func:`jit_options`), once per
        set of knob values. Each compiled function wraps a new function object that keeps the
        undecorated signature (``functools.wraps``), which ``static_argnames`` and ``donate_argnames``
        are resolved against. Where this jax does not say which options were given, a failure of the
        re-jit is said in one line naming the function, not as a failed step."""
        undecorated = jitted.__wrapped__
        options = jit_options(jitted, name)

        def make() -> Any:
            return functools.wraps(undecorated)(lambda *args, **kwargs: undecorated(*args, **kwargs))

        compiled = self._per_knob_values(make, options or {})
        if options is None:
            compiled = _unknown_options_guard(compiled, name)
        retraced = functools.wraps(undecorated)(compiled)  # its signature, for call_hand_written
        return retraced

    def _base_train_step(self) -> Any:
        from keras.src.backend.jax.trainer import JAXTrainer

        return JAXTrainer.train_step

    def _per_knob_values(self, make: Any, options: dict[str, Any] | None = None) -> Any:
        """``jax.jit(make(), **options)`` once per distinct set of knob values: tracing reads the knobs
        as Python numbers, so each scale set is its own compiled program; the real step (every
        knob at 1) is one of them. ``make`` must return a NEW function object each time."""
        import jax

        compiled: dict[tuple[float, ...], Any] = {}

        def call(*args: Any, **kwargs: Any) -> Any:
            key = tuple(float(knob.current) for knob in self._knobs)
            function = compiled.get(key)
            if function is None:
                function = compiled[key] = jax.jit(make(), **(options or {}))
            return function(*args, **kwargs)

        return call

    def _trainer_step(self, setup: Any) -> Step:
        model = setup.model
        train_step = self._per_knob_values(lambda: lambda state, data: model.train_step(state, data))

        def step(x: Any, y: Any) -> None:
            state = (
                [v.value for v in model.trainable_variables],
                [v.value for v in model.non_trainable_variables],
                [v.value for v in model.optimizer.variables],
                [v.value for v in model.metrics_variables],
            )
            _, (trainable, non_trainable, optimizer_values, metrics) = train_step(state, (x, y))
            _assign(model.trainable_variables, trainable)
            _assign(model.non_trainable_variables, non_trainable)
            _assign(model.optimizer.variables, optimizer_values)
            _assign(model.metrics_variables, metrics)

        return step

    def _loss_step(self, setup: Any, with_penalties: bool) -> Step:
        """No compiled loss to run ``train_step`` with (or a ``data_loss`` reference): the same
        stateless pieces it uses (``stateless_call``, ``jax.value_and_grad``,
        ``optimizer.stateless_apply``) around the set-up's loss."""
        import jax
        import keras

        model, optimizer = setup.model, setup.optimizer
        loss_fn = self._loss(setup, with_penalties)
        trainable_refs, non_trainable_refs = model.trainable_variables, model.non_trainable_variables

        def pure(trainable: Any, non_trainable: Any, optimizer_values: Any, x: Any, y: Any) -> Any:
            def compute(trainable: Any, non_trainable: Any) -> Any:
                y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
                mapping = list(zip(trainable_refs, trainable)) + list(zip(non_trainable_refs, non_trainable))
                with keras.StatelessScope(state_mapping=mapping):  # model.losses read these values
                    loss = loss_fn(y, y_pred)
                return loss, non_trainable

            (_, non_trainable), grads = jax.value_and_grad(compute, has_aux=True)(trainable, non_trainable)
            trainable, optimizer_values = optimizer.stateless_apply(optimizer_values, grads, trainable)
            return trainable, non_trainable, optimizer_values

        # a new function object per knob set: jax.jit shares its trace cache between wrappers of one function
        compiled = self._per_knob_values(lambda: lambda *args: pure(*args))

        def step(x: Any, y: Any) -> None:
            trainable, non_trainable, optimizer_values = compiled(
                [v.value for v in trainable_refs],
                [v.value for v in non_trainable_refs],
                [v.value for v in optimizer.variables],
                x,
                y,
            )
            _assign(trainable_refs, trainable)
            _assign(non_trainable_refs, non_trainable)
            _assign(optimizer.variables, optimizer_values)

        return step

    def penalty_gradients(self, setup: Any, sources: Sequence[DecaySource]) -> dict[str, np.ndarray]:
        import jax

        gradients = {}
        for variable, regularizer in self._regularized(setup, sources):
            gradient = jax.grad(lambda w, r=regularizer: r(w))(variable.value)
            gradients[variable.path] = np.asarray(gradient, dtype=np.float64)
        return gradients

    # ---- several devices: keras.distribution ---------------------------------------------
    def placement(self, setup: Any) -> str | None:
        """``2 devices (DataParallel on cpu:0, cpu:1: 2 replicas)`` under a ``keras.distribution``."""
        import keras

        distribution = keras.distribution.distribution()
        if distribution is None:
            return None
        mesh = getattr(distribution, "device_mesh", None)
        devices = _devices(mesh)
        names = ", ".join(f"{d.platform}:{d.id}" if hasattr(d, "platform") else str(d) for d in devices)
        shape = dict(zip(getattr(mesh, "axis_names", ()), tuple(getattr(mesh, "shape", ())))) if mesh else {}
        kind = type(distribution).__name__
        replicas = f": {len(devices)} replicas" if kind == "DataParallel" else f", mesh {shape}" if shape else ""
        return f"{len(devices)} device{'s' if len(devices) != 1 else ''} ({kind} on {names}{replicas})"

    def refuse(self, setup: Any) -> str | None:
        import jax

        if jax.process_count() > 1:
            return (
                f"jax.distributed runs {jax.process_count()} processes and verify probes one: verify the same "
                "set-up in one process on this host's devices (keras.distribution.DataParallel; which "
                "variables decay does not depend on the number of processes)"
            )
        return None

    def replica_disagreements(self) -> dict[str, float]:
        return dict(self._disagreements)

    def read(self, variables: Sequence[Any]) -> list[np.ndarray]:
        """The values, and under a ``keras.distribution`` each replicated copy compared: shards that
        hold the same slice of a variable on different devices must be equal after every step."""
        values = super().read(variables)
        import keras

        if keras.distribution.distribution() is not None:
            for variable in variables:
                self._compare_replicas(variable)
        return values

    def _compare_replicas(self, variable: Any) -> None:
        by_slice: dict[str, np.ndarray] = {}
        for shard in getattr(getattr(variable, "value", None), "addressable_shards", ()) or ():
            key = repr(shard.index)
            data = np.asarray(shard.data)
            first = by_slice.setdefault(key, data)
            if first is not data and first.shape == data.shape and not np.array_equal(first, data):
                path = getattr(variable, "path", str(variable))
                difference = float(np.max(np.abs(data.astype(np.float64) - first)))
                self._disagreements[path] = max(difference, self._disagreements.get(path, 0.0))

    def device(self, requested: str | None) -> str:
        import jax

        if requested is not None:
            return requested.upper()
        return "CPU" if jax.default_backend() == "cpu" else "GPU"

    @contextlib.contextmanager
    def scope(self, setup: Any, device: str) -> Iterator[None]:
        import jax

        devices = jax.devices("cpu") if device == "CPU" else jax.devices()
        with jax.default_device(devices[0]):
            yield

    @contextlib.contextmanager
    def determinism(self) -> Iterator[None]:
        import jax

        if jax.default_backend() != "cpu":
            if "xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", ""):
                self._notes.append("XLA deterministic GPU ops on for the probe (XLA_FLAGS)")
            else:
                self._notes.append(
                    "JAX started without --xla_gpu_deterministic_ops (it must be in XLA_FLAGS before "
                    "JAX starts; verify --backend jax sets it): the repeated real step sets the noise "
                    "floor"
                )
        yield
