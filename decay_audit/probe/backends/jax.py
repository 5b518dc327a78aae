"""Keras 3 on JAX: ``JAXTrainer.train_step(state, data)`` under ``jax.jit``, as ``fit`` runs it.

JAX reads ``XLA_FLAGS`` once, when its first backend starts, so GPU op determinism
(``--xla_gpu_deterministic_ops=true``) is requested before Keras is imported
(:func:`request_xla_determinism`, called by ``verify --backend jax``); the core also
repeats the real step to calibrate the noise floor, whatever the flags.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from decay_audit.kinds import KerasBackend
from decay_audit.probe.backends.interface import DecaySource, Step
from decay_audit.probe.backends.keras3_eager import Keras3EagerBackend

XLA_DETERMINISM = "--xla_gpu_deterministic_ops=true"


def request_xla_determinism() -> None:
    """Add the XLA flag for deterministic GPU ops, before JAX starts (harmless on CPU)."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {XLA_DETERMINISM}".strip()


def _assign(references: Sequence[Any], values: Sequence[Any]) -> None:
    for reference, value in zip(references, values):
        reference.assign(value)


class JaxBackend(Keras3EagerBackend):
    name = KerasBackend.JAX.value

    def _base_train_step(self) -> Any:
        from keras.src.backend.jax.trainer import JAXTrainer

        return JAXTrainer.train_step

    def _per_knob_values(self, make: Any) -> Any:
        """``jax.jit(make())`` once per distinct set of knob values: tracing reads the knobs as
        Python numbers, so each scale set is its own compiled program; the real step (every
        knob at 1) is one of them. ``make`` must return a NEW function object each time."""
        import jax

        compiled: dict[tuple[float, ...], Any] = {}

        def call(*args: Any) -> Any:
            key = tuple(float(knob.current) for knob in self._knobs)
            function = compiled.get(key)
            if function is None:
                function = compiled[key] = jax.jit(make())
            return function(*args)

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
