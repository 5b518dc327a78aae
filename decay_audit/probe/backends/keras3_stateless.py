"""Keras 3 on JAX and on PyTorch: each step through the backend trainer's own ``train_step``.

``model.fit`` on JAX jits ``JAXTrainer.train_step(state, data)``: stateless, the
(trainable, non-trainable, optimizer, metrics) values in and out, gradients from
``jax.value_and_grad`` over ``stateless_call`` + ``compute_loss``, the update from
``optimizer.stateless_apply``. On PyTorch, ``TorchTrainer.train_step(data)`` is
stateful (``loss.backward()``, ``optimizer.apply``). The probe calls the same method,
unjitted, so a switch flipped between twin steps (``weight_decay = None``, a regularizer
removed) is seen by the next call; the jitted ``fit`` step computes the same function.

What differs from TensorFlow is measured, not assumed: the optimizer's
``_use_weight_decay`` receives the Keras variable here, so ``exclude_from_weight_decay(
var_names=...)`` is searched in the LEAF name (``bias``, ``gamma``), where TensorFlow
searches ``layer/bias:0`` (keras 3.15 ``base_optimizer._use_weight_decay``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np

from decay_audit.probe.backends.common import DecaySource, SourceKind, Trainable


def is_keras3_model(obj: Any) -> bool:
    return any(cls.__module__.startswith("keras.") and cls.__name__ == "Layer" for cls in type(obj).__mro__)


def running_backend() -> str | None:
    """The Keras 3 backend already imported, without importing Keras."""
    import sys

    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras is not None and hasattr(keras, "backend") else None


def inner_optimizer(optimizer: Any) -> Any:
    return getattr(optimizer, "inner_optimizer", optimizer)


def decay_knobs(optimizer: Any) -> list[str]:
    """Every numeric attribute named ``*weight_decay`` (``weight_decay``; Muon's ``adam_weight_decay``):
    ``_apply_weight_decay`` skips a knob that is None (keras 3.15 base_optimizer, muon)."""
    return [name for name, value in vars(optimizer).items()
            if name.endswith("weight_decay") and not name.startswith("_")
            and isinstance(value, (int, float)) and not isinstance(value, bool) and value]


@contextlib.contextmanager
def _knobs_off(optimizer: Any, names: list[str]) -> Iterator[None]:
    saved = {name: getattr(optimizer, name) for name in names}
    try:
        for name in names:
            setattr(optimizer, name, None)
        yield
    finally:
        for name, value in saved.items():
            setattr(optimizer, name, value)


@contextlib.contextmanager
def _regularizers_off(model: Any) -> Iterator[None]:
    """``Layer._get_regularization_losses`` reads ``variable.regularizer`` on each ``model.losses``."""
    saved = []
    for variable in model.trainable_weights:
        if getattr(variable, "regularizer", None) is not None:
            saved.append((variable, variable.regularizer))
            variable.regularizer = None
    try:
        yield
    finally:
        for variable, regularizer in saved:
            variable.regularizer = regularizer


class Keras3Backend:
    """What Keras 3 set-ups share whatever backend runs them; subclasses run the step."""

    name = "keras3"

    def accepts(self, setup: Any) -> bool:
        return is_keras3_model(setup.model) and running_backend() == self.name

    def framework(self) -> str:
        import keras

        return f"Keras {keras.__version__} on {self.name}"

    def trainable(self, setup: Any) -> list[Trainable]:
        return [Trainable(v.path, v, setup.optimizer) for v in setup.model.trainable_variables]

    def prepare(self, setup: Any) -> None:
        if not inner_optimizer(setup.optimizer).built:
            setup.optimizer.build(setup.model.trainable_variables)

    def state_variables(self, setup: Any) -> list[Any]:
        seen, result = set(), []
        optimizer = setup.optimizer
        for variable in (list(setup.model.variables) + list(optimizer.variables)
                         + list(inner_optimizer(optimizer).variables) + list(self._metrics_variables(setup))):
            if id(variable) not in seen:
                seen.add(id(variable))
                result.append(variable)
        return result

    @staticmethod
    def _metrics_variables(setup: Any) -> list[Any]:
        try:
            return list(setup.model.metrics_variables)
        except (AttributeError, ValueError):
            return []

    def read(self, variables: list[Any]) -> list[np.ndarray]:
        import keras

        return [np.array(keras.ops.convert_to_numpy(v.value), copy=True) for v in variables]

    def write(self, variables: list[Any], values: list[np.ndarray]) -> None:
        for variable, value in zip(variables, values):
            variable.assign(value)

    def decay_sources(self, setup: Any) -> list[DecaySource]:
        sources = []
        inner = inner_optimizer(setup.optimizer)
        knobs = decay_knobs(inner)
        if knobs:
            sources.append(DecaySource(SourceKind.DECOUPLED, f"{type(inner).__name__}.{'/'.join(knobs)}",
                                       setup.optimizer, lambda: _knobs_off(inner, knobs)))
        sources.append(DecaySource(SourceKind.COUPLED, "regularizers (variable.regularizer)", setup.model,
                                   lambda: _regularizers_off(setup.model)))
        return sources

    def learning_rate(self, optimizer: Any) -> float:
        try:
            return float(np.asarray(inner_optimizer(optimizer).learning_rate))
        except (TypeError, ValueError):
            return float("nan")

    def decay_factor(self, optimizer: Any) -> tuple[float, str | None]:
        wd = getattr(inner_optimizer(optimizer), "weight_decay", None)
        return (float(wd) if wd else 0.0), "lr*weight_decay"

    def _uses_own_train_step(self, setup: Any) -> bool:
        model = setup.model
        return (setup.data_loss is None and getattr(model, "optimizer", None) is setup.optimizer
                and getattr(model, "compiled", False))

    def step(self, setup: Any, batch: tuple[Any, Any], switched_off: list[DecaySource]) -> None:
        with contextlib.ExitStack() as stack:
            for source in switched_off:
                stack.enter_context(source.off())
            if setup.train_step is not None and not switched_off:
                setup.train_step(setup.model, setup.optimizer, *batch)
            elif setup.train_step is None and self._uses_own_train_step(setup):
                self._model_train_step(setup, batch)
            else:
                penalties = not any(s.kind is SourceKind.COUPLED for s in switched_off)
                self._loss_step(setup, batch, penalties)

    def zero_gradient_step(self, setup: Any, switched_off: list[DecaySource]) -> None:
        import keras

        with contextlib.ExitStack() as stack:
            for source in switched_off:
                stack.enter_context(source.off())
            variables = setup.model.trainable_variables
            setup.optimizer.apply([keras.ops.zeros_like(v.value) for v in variables], variables)

    def determinism(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    # subclasses
    def _model_train_step(self, setup: Any, batch: tuple[Any, Any]) -> None:
        raise NotImplementedError

    def _loss_step(self, setup: Any, batch: tuple[Any, Any], penalties: bool) -> None:
        raise NotImplementedError


def data_loss_function(setup: Any, penalties: bool) -> Any:
    """The loss of a set-up that is not compiled or names ``data_loss``: with the penalties of
    ``model.losses`` unless the reference removes them."""
    import keras

    model = setup.model
    base = setup.data_loss
    if base is None and getattr(model, "compiled", False) and getattr(model, "loss", None) is not None:
        def compiled(x, y, y_pred):
            return model.compute_loss(x=x, y=y, y_pred=y_pred, training=True)
        return compiled
    base = base or keras.losses.MeanSquaredError()

    def loss(x, y, y_pred):
        value = base(y, y_pred)
        if penalties and model.losses:
            value = value + sum(model.losses)
        return value
    return loss
