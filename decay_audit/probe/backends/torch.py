"""Keras 3 on PyTorch: ``TorchTrainer.train_step(data)``, the stateful step ``fit`` runs
(``loss.backward()``, then ``optimizer.apply``). Determinism: ``torch.use_deterministic_algorithms``
for the probe's duration (cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG``, set before CUDA starts).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from decay_audit.probe.backends.keras3_stateless import Keras3Backend, data_loss_function

NAME = "torch"


class TorchBackend(Keras3Backend):
    name = NAME

    def framework(self) -> str:
        import keras
        import torch

        return f"Keras {keras.__version__} on PyTorch {torch.__version__}"

    def device(self, requested: str | None) -> str:
        import torch

        if requested is not None:
            return requested.upper()
        return "GPU" if torch.cuda.is_available() else "CPU"

    def placement(self, device: str) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()  # Keras' torch backend places every variable on its device

    @contextlib.contextmanager
    def determinism(self) -> Iterator[None]:
        import torch

        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        was = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was)

    def _model_train_step(self, setup: Any, batch: tuple[Any, Any]) -> None:
        import keras

        x, y = (keras.tree.map_structure(keras.ops.convert_to_tensor, part) for part in batch)
        setup.model.train_step((x, y))

    def _loss_step(self, setup: Any, batch: tuple[Any, Any], penalties: bool) -> None:
        import keras

        model, optimizer = setup.model, setup.optimizer
        x, y = (keras.tree.map_structure(keras.ops.convert_to_tensor, part) for part in batch)
        model.zero_grad()
        loss = data_loss_function(setup, penalties)(x, y, model(x, training=True))
        loss.backward()
        variables = model.trainable_weights
        optimizer.apply([v.value.grad for v in variables], variables)
