"""Keras 3 on JAX and on PyTorch: what the two backends share.

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

import contextlib
import sys
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from decay_audit.probe.backends.interface import DecaySource, ProbeBackend, SourceKind, Step, Trainable
from decay_audit.probe.backends.tensorflow import (
    COUPLED_KNOBS,
    DECOUPLED_KNOBS,
    _number,
    _regularizer_text,
    _unwrap,
    top_level_optimizers,
    variable_path,
)


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


class Keras3EagerBackend(ProbeBackend):
    """Keras 3 models on a non-TensorFlow backend; subclasses run the trainer's step."""

    name = ""

    def __init__(self) -> None:
        self._notes: list[str] = []
        self._knobs: list[_AttributeKnob] = []

    def accepts(self, setup: Any) -> bool:
        return running_keras_backend() == self.name and is_keras3_model(setup.model)

    def optimizers(self, setup: Any) -> list[Any]:
        seen, result = set(), []
        for top in top_level_optimizers(setup):
            for optimizer in _unwrap(top):
                if id(optimizer) not in seen:
                    seen.add(id(optimizer))
                    result.append(optimizer)
        return result

    # ---- knobs ----------------------------------------------------------------------
    @contextlib.contextmanager
    def switchable(self, setup: Any) -> Iterator[list[DecaySource]]:
        sources: list[DecaySource] = []
        restore: list[tuple[Any, str, Any]] = []
        optimizers = self.optimizers(setup)
        labels = {id(o): (type(o).__name__ if len(optimizers) == 1 else f"optimizers[{i}] {type(o).__name__}")
                  for i, o in enumerate(optimizers)}
        try:
            for optimizer in optimizers:
                for kind, knobs in ((SourceKind.DECOUPLED, DECOUPLED_KNOBS), (SourceKind.COUPLED, COUPLED_KNOBS)):
                    for knob in knobs:
                        if not hasattr(optimizer, knob):
                            continue
                        original = getattr(optimizer, knob)
                        value = _number(original)
                        if value is None:
                            continue
                        restore.append((optimizer, knob, original))
                        setattr(optimizer, knob, value)
                        handle = _AttributeKnob(optimizer, knob, value)
                        self._knobs.append(handle)
                        sources.append(DecaySource(kind, labels[id(optimizer)], knob, value, None, optimizer, handle))
            scaled = _scaled_regularizer_class()
            for variable in setup.model.trainable_variables:
                regularizer = getattr(variable, "regularizer", None)
                if regularizer is None:
                    continue
                wrapper = scaled(regularizer)
                restore.append((variable, "regularizer", regularizer))
                variable.regularizer = wrapper
                text, value = _regularizer_text(regularizer)
                handle = _AttributeKnob(wrapper, "scale", 1.0)
                self._knobs.append(handle)
                sources.append(DecaySource(SourceKind.COUPLED, "model", f"regularizer {text}", value,
                                           (variable_path(variable),), None, handle))
            yield sources
        finally:
            self._knobs = []
            for owner, attribute, original in reversed(restore):
                setattr(owner, attribute, original)

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
        seen, result = set(), []
        for variable in candidates:
            if id(variable) not in seen:
                seen.add(id(variable))
                result.append(variable)
        return result

    def trainable(self, setup: Any) -> list[Trainable]:
        return [Trainable(variable_path(v), v) for v in setup.model.trainable_variables]

    def read(self, variables: Sequence[Any]) -> list[np.ndarray]:
        import keras

        return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in variables]

    def write(self, variables: Sequence[Any], values: Sequence[np.ndarray]) -> None:
        for variable, value in zip(variables, values):
            variable.assign(value)

    # ---- steps ----------------------------------------------------------------------
    def _keras_own_step(self, setup: Any) -> bool:
        model = setup.model
        return (getattr(model, "compiled", False) and setup.optimizer is getattr(model, "optimizer", None)
                and setup.data_loss is None and getattr(model, "loss", None) is not None)

    def make_step(self, setup: Any) -> Step:
        model, optimizer = setup.model, setup.optimizer
        if setup.train_step is not None:
            from decay_audit.probe.backends.tensorflow import _call_hand_written

            return _call_hand_written(setup.train_step, model, optimizer)
        if self._keras_own_step(setup):
            return self._trainer_step(setup)
        if type(model).train_step is not self._base_train_step() and getattr(model, "compiled", False):
            return self._trainer_step(setup)  # a model's own train_step override: what fit runs
        return self._loss_step(setup, with_penalties=True)

    def make_reference_step(self, setup: Any) -> Step | None:
        if setup.train_step is None:
            return None
        model = setup.model
        if setup.data_loss is None and not (getattr(model, "compiled", False) and getattr(model, "loss", None)):
            self._notes.append("hand-written train_step without data_loss: penalties written into the step itself "
                               "are not measured (give data_loss); optimizer decay and regularizers are")
            return None
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

    def update_every(self, setup: Any) -> int:
        """Keras 3 gradient accumulation (``gradient_accumulation_steps``): decay only on updating steps."""
        return max([int(getattr(o, "gradient_accumulation_steps", None) or 1) for o in self.optimizers(setup)] or [1])

    def notes(self, setup: Any) -> list[str]:
        return list(dict.fromkeys(self._notes))

    # ---- per backend ------------------------------------------------------------------
    def _base_train_step(self) -> Any:
        raise NotImplementedError

    def _trainer_step(self, setup: Any) -> Step:
        raise NotImplementedError

    def _loss_step(self, setup: Any, with_penalties: bool) -> Step:
        raise NotImplementedError
