"""Keras 3 on JAX: ``JAXTrainer.train_step(state, data)``, the stateless step ``fit`` jits.

JAX reads ``XLA_FLAGS`` once, when its first backend starts, so op determinism on a GPU
(``--xla_gpu_deterministic_ops=true``) is requested by the CLI before Keras is imported
(``common.request_xla_determinism``); the driver also repeats the real step on a GPU and
counts their difference as noise.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

from decay_audit.probe.backends.keras3_stateless import Keras3Backend, data_loss_function

NAME = "jax"


class JaxBackend(Keras3Backend):
    name = NAME

    def framework(self) -> str:
        import jax
        import keras

        return f"Keras {keras.__version__} on JAX {jax.__version__}"

    def device(self, requested: str | None) -> str:
        import jax

        platform = jax.default_backend()
        if requested is not None:
            return requested.upper()
        return "CPU" if platform == "cpu" else "GPU"

    def placement(self, device: str) -> contextlib.AbstractContextManager:
        import jax

        devices = jax.devices("cpu" if device == "CPU" else None)
        return jax.default_device(devices[0])

    def determinism(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    @staticmethod
    def deterministic() -> bool:
        return "xla_gpu_deterministic_ops=true" in os.environ.get("XLA_FLAGS", "")

    def _model_train_step(self, setup: Any, batch: tuple[Any, Any]) -> None:
        model = setup.model
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in model.optimizer.variables],
            [v.value for v in model.metrics_variables],
        )
        _, state = model.train_step(state, batch)
        trainable, non_trainable, optimizer_values, metrics = state
        for references, values in ((model.trainable_variables, trainable),
                                   (model.non_trainable_variables, non_trainable),
                                   (model.optimizer.variables, optimizer_values),
                                   (model.metrics_variables, metrics)):
            for reference, value in zip(references, values):
                reference.assign(value)

    def _loss_step(self, setup: Any, batch: tuple[Any, Any], penalties: bool) -> None:
        """A set-up without a compiled loss (or naming ``data_loss``): the same stateless pieces
        ``train_step`` uses, with the set-up's loss."""
        import jax
        import keras

        model, optimizer = setup.model, setup.optimizer
        x, y = batch
        loss_fn = data_loss_function(setup, penalties)
        trainable_refs = model.trainable_variables
        non_trainable_refs = model.non_trainable_variables

        def compute(trainable, non_trainable):
            y_pred, non_trainable = model.stateless_call(trainable, non_trainable, x, training=True)
            mapping = list(zip(trainable_refs, trainable)) + list(zip(non_trainable_refs, non_trainable))
            with keras.StatelessScope(state_mapping=mapping):
                loss = loss_fn(x, y, y_pred)
            return loss, non_trainable

        (_, non_trainable), grads = jax.value_and_grad(compute, has_aux=True)(
            [v.value for v in trainable_refs], [v.value for v in non_trainable_refs])
        trainable, optimizer_values = optimizer.stateless_apply(
            [v.value for v in optimizer.variables], grads, [v.value for v in trainable_refs])
        for references, values in ((trainable_refs, trainable), (non_trainable_refs, non_trainable),
                                   (optimizer.variables, optimizer_values)):
            for reference, value in zip(references, values):
                reference.assign(value)
