"""Keras 3 on JAX and on PyTorch: what the two backends share (beyond :class:`Keras3Backend`,
which the TensorFlow backend shares too).

Each step goes through the backend trainer's own ``train_step``, the method ``model.fit``
runs: on JAX the stateless ``JAXTrainer.train_step(state, data)`` under ``jax.jit``, as
``fit`` compiles it; on PyTorch the stateful ``TorchTrainer.train_step(data)``
(``loss.backward()``, then ``optimizer.apply``), eager as ``fit`` runs it. A knob is a
Python number (``weight_decay``, Muon's ``adam_weight_decay``, Ftrl's l1/l2, a
regularizer's scale): torch reads it at each call; XLA bakes it in when it traces, so the
JAX backend compiles once per distinct set of knob values, the real step and every twin
through the same path (interface point 2).

Backend-dependent behaviour is measured, not assumed: ``_use_weight_decay`` receives the
Keras variable on these backends, so ``exclude_from_weight_decay(var_names=...)`` is
searched in the LEAF name (``bias``, ``gamma``), where TensorFlow searches the
``tf.Variable`` name ``layer/bias:0`` (keras 3.15 ``base_optimizer._use_weight_decay``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from decay_audit.probe.backends._keras3 import Keras3Backend, call_hand_written
from decay_audit.probe.backends.interface import DecaySource, Step


def running_keras_backend() -> str | None:
    """The backend of the Keras already imported (None before the import: it is fixed then)."""
    keras = sys.modules.get("keras")
    backend = getattr(keras, "backend", None)
    return backend.backend() if backend is not None and hasattr(backend, "backend") else None


def is_keras3_model(obj: Any) -> bool:
    return any(cls.__module__.startswith("keras.") and cls.__name__ == "Layer" for cls in type(obj).__mro__)


class _AttributeKnob:
    """A knob held in a Python attribute: ``value * scale``, read when the step is traced or run."""

    def __init__(self, owner: Any, attribute: str, value: float):
        self.owner, self.attribute, self.value = owner, attribute, value

    def set(self, scale: float) -> None:
        setattr(self.owner, self.attribute, self.value * scale)

    @property
    def current(self) -> float:
        return getattr(self.owner, self.attribute)


def _scaled_regularizer_class() -> type:
    import keras

    class _ScaledRegularizer(keras.regularizers.Regularizer):
        """The user's regularizer times a Python-number scale, for the probe's lifetime only
        (``0 * penalty`` adds an exact zero to the loss and its gradient)."""

        def __init__(self, regularizer: Any):
            self.regularizer, self.scale = regularizer, 1.0

        def __call__(self, x: Any) -> Any:
            penalty = self.regularizer(x)
            return penalty if self.scale == 1.0 else penalty * self.scale

    return _ScaledRegularizer


class Keras3EagerBackend(Keras3Backend):
    """Keras 3 models on a non-TensorFlow backend; subclasses run the trainer's step."""

    name = ""

    def accepts(self, setup: Any) -> bool:
        return running_keras_backend() == self.name and is_keras3_model(setup.model)

    # ---- knobs: Python numbers in the attributes --------------------------------------
    def _optimizer_knob(self, optimizer: Any, knob: str, value: float) -> Any:
        setattr(optimizer, knob, value)
        return _AttributeKnob(optimizer, knob, value)

    def _regularizer_knob(self, regularizer: Any) -> tuple[Any, Any]:
        wrapper = _scaled_regularizer_class()(regularizer)
        return wrapper, _AttributeKnob(wrapper, "scale", 1.0)

    # ---- state ----------------------------------------------------------------------
    def read(self, variables: Sequence[Any]) -> list[np.ndarray]:
        import keras

        return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in variables]

    # ---- steps ----------------------------------------------------------------------
    def _keras_own_step(self, setup: Any) -> bool:
        model = setup.model
        return (
            getattr(model, "compiled", False)
            and setup.optimizer is getattr(model, "optimizer", None)
            and setup.data_loss is None
            and getattr(model, "loss", None) is not None
        )

    def make_step(self, setup: Any) -> Step:
        model, optimizer = setup.model, setup.optimizer
        if setup.train_step is not None:
            return call_hand_written(setup.train_step, model, optimizer)
        if self._keras_own_step(setup):
            return self._trainer_step(setup)
        if type(model).train_step is not self._base_train_step() and getattr(model, "compiled", False):
            return self._trainer_step(setup)  # a model's own train_step override: what fit runs
        return self._loss_step(setup, with_penalties=True)

    def _data_loss_step(self, setup: Any) -> Step:
        return self._loss_step(setup, with_penalties=False)

    def _loss(self, setup: Any, with_penalties: bool) -> Any:
        """The set-up's data loss (``data_loss``, the compiled loss, else MSE), plus ``model.losses``."""
        import keras

        model = setup.model
        if setup.data_loss is not None:
            base = setup.data_loss
        elif getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:

            def base(y, y_pred):
                return model._compile_loss(y, y_pred)
        else:
            base = keras.losses.MeanSquaredError()

        def loss(y, y_pred):
            value = base(y, y_pred)
            if with_penalties and model.losses:
                value = value + sum(model.losses)
            return value

        return loss

    def _regularized(self, setup: Any, sources: Sequence[DecaySource]) -> list[tuple[Any, Any]]:
        """``(variable, the user's regularizer)`` for each regularizer source, in the model's order:
        what ``penalty_gradients`` differentiates, each backend with its own autodiff."""
        by_path = {s.variables[0]: s for s in sources if s.owner == "model" and s.variables}
        pairs = []
        for variable in setup.model.trainable_variables:
            wrapper = getattr(getattr(by_path.get(variable.path), "handle", None), "owner", None)
            regularizer = getattr(wrapper, "regularizer", None)
            if regularizer is not None:
                pairs.append((variable, regularizer))
        return pairs

    # ---- per backend ------------------------------------------------------------------
    def _base_train_step(self) -> Any:
        raise NotImplementedError

    def _trainer_step(self, setup: Any) -> Step:
        raise NotImplementedError

    def _loss_step(self, setup: Any, with_penalties: bool) -> Step:
        raise NotImplementedError
