"""Keras 3 on PyTorch: ``TorchTrainer.train_step(data)``, the stateful step ``fit`` runs
(``zero_grad``, ``loss.backward()``, ``optimizer.apply``). Determinism on a GPU:
``torch.use_deterministic_algorithms`` for the probe (cuBLAS also needs
``CUBLAS_WORKSPACE_CONFIG`` before CUDA starts, which ``verify --backend torch`` sets).

torch's global random generator is part of the state a step reads: an unseeded ``Dropout``
(``seed=None``) takes torch's fast path, ``torch.nn.functional.dropout``, which draws from it
(keras/src/backend/torch/random.py, Keras 3.15), so each snapshot carries the generator's state
and each twin restores it: without it every twin draws another mask, the repeat of the real step
differs, and the noise floor swallows the decay (measured: kernels reported "not-decayed").
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


def request_cublas_determinism() -> None:
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def _tensors(structure: Any) -> Any:
    import keras

    return keras.tree.map_structure(keras.ops.convert_to_tensor, structure)


class TorchBackend(Keras3EagerBackend):
    name = KerasBackend.TORCH.value

    def _base_train_step(self) -> Any:
        from keras.src.backend.torch.trainer import TorchTrainer

        return TorchTrainer.train_step

    def _trainer_step(self, setup: Any) -> Step:
        model = setup.model
        return lambda x, y: model.train_step((_tensors(x), _tensors(y)))

    def _loss_step(self, setup: Any, with_penalties: bool) -> Step:
        model, optimizer = setup.model, setup.optimizer
        loss_fn = self._loss(setup, with_penalties)

        def step(x: Any, y: Any) -> None:
            x, y = _tensors(x), _tensors(y)
            model.zero_grad()
            loss = loss_fn(y, model(x, training=True))
            loss.backward()
            variables = model.trainable_weights
            optimizer.apply([v.value.grad for v in variables], variables)

        return step

    def snapshot(self, variables: Sequence[Any]) -> Any:
        import torch

        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        return self.read(variables), torch.get_rng_state(), cuda

    def restore(self, variables: Sequence[Any], snapshot: Any) -> None:
        import torch

        values, cpu, cuda = snapshot
        self.write(variables, values)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)

    def penalty_gradients(self, setup: Any, sources: Sequence[DecaySource]) -> dict[str, np.ndarray]:
        import torch

        gradients = {}
        for variable, regularizer in self._regularized(setup, sources):
            weight = variable.value.detach().clone().requires_grad_(True)
            (gradient,) = torch.autograd.grad(regularizer(weight), weight)
            gradients[variable.path] = gradient.detach().cpu().numpy().astype(np.float64)
        return gradients

    def device(self, requested: str | None) -> str:
        import torch

        if requested is not None:
            return requested.upper()
        return "GPU" if torch.cuda.is_available() else "CPU"

    @contextlib.contextmanager
    def determinism(self) -> Iterator[None]:
        import torch

        if not torch.cuda.is_available():
            yield
            return
        was = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(True, warn_only=True)
        self._notes.append("torch deterministic algorithms on for the probe (GPU)")
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(was)
