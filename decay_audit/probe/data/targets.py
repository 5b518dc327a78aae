"""Synthetic targets that fit the loss the step minimises (``data_loss``, else the compiled
loss), so that a set-up without data gets a finite loss and real gradients.

Kinds are tried in the order the loss's name suggests (class ids for "sparse" losses,
probabilities for cross-entropies, real values otherwise) and the first that gives a finite
loss is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from decay_audit.kinds import TextEnum
from decay_audit.probe.setup import describe_exception


class TargetKind(TextEnum):
    REAL = "real"
    """Normal random values shaped like the output (regression losses)."""
    PROBABILITY = "probability"
    """Uniform values in [0, 1] shaped like the output (cross-entropies, hinge)."""
    SPARSE = "sparse"
    """Integer class ids, the output's shape without its last axis (sparse cross-entropies)."""


def _loss_text(loss: Any) -> str:
    """What a loss calls itself (string id, Loss name, class, wrapped function), lower-case, for hints."""
    if loss is None:
        return ""
    if isinstance(loss, str):
        return loss.lower()
    parts = [type(loss).__name__, str(getattr(loss, "name", "") or ""), str(getattr(loss, "__name__", "") or "")]
    wrapped = getattr(loss, "fn", None) or getattr(loss, "python_function", None)
    if wrapped is not None:
        parts.append(str(getattr(wrapped, "__name__", "")))
    return " ".join(parts).lower()


def _order(hint: str) -> list[TargetKind]:
    if "sparse" in hint:
        return [TargetKind.SPARSE, TargetKind.PROBABILITY, TargetKind.REAL]
    if any(word in hint for word in ("entropy", "hinge", "kl_div", "kldiv", "poisson", "focal", "dice")):
        return [TargetKind.PROBABILITY, TargetKind.SPARSE, TargetKind.REAL]
    return [TargetKind.REAL, TargetKind.PROBABILITY, TargetKind.SPARSE]


def _shape(y_pred: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in y_pred.shape)


def make_target(kind: TargetKind, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if kind is TargetKind.SPARSE:
        return rng.integers(0, max(shape[-1], 1) if shape else 1, size=shape[:-1]).astype("int32")
    if kind is TargetKind.PROBABILITY:
        return rng.uniform(0, 1, size=shape).astype("float32")
    return rng.normal(size=shape).astype("float32")


def _finite(value: Any) -> bool:
    import keras

    try:
        return all(bool(np.all(np.isfinite(keras.ops.convert_to_numpy(v)))) for v in keras.tree.flatten(value))
    except (TypeError, ValueError):
        return False


def _per_output_losses(model: Any, y_pred: Any) -> Any:
    """The compiled loss of each output, in y_pred's structure (None where it cannot be told)."""
    loss = getattr(model, "loss", None)
    names = list(getattr(model, "output_names", None) or [])

    def of(key: Any, index: int) -> Any:
        if isinstance(loss, dict):
            if key in loss:
                return loss[key]
            return loss.get(names[index]) if index < len(names) else None
        if isinstance(loss, (list, tuple)):
            return loss[index] if index < len(loss) else None
        return loss

    if isinstance(y_pred, dict):
        return {key: of(key, index) for index, key in enumerate(y_pred)}
    if isinstance(y_pred, (list, tuple)):
        return [of(index, index) for index in range(len(y_pred))]
    return of(0, 0)


def _callable_loss(loss: Any) -> Any:
    import keras

    if loss is None:
        return None
    try:
        return keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss if callable(loss) else None
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class TargetPlan:
    """How to draw targets for every step: a kind and shape per output, in y_pred's structure."""

    structure: Any
    """y_pred's structure with (TargetKind, shape) leaves."""

    def draw(self, rng: np.random.Generator) -> Any:
        return _map_outputs(lambda leaf: make_target(leaf[0], leaf[1], rng), self.structure)


def _is_leaf(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], TargetKind)


def _map_outputs(function: Any, *structures: Any) -> Any:
    """Map over y_pred's outputs (tensors are leaves; dicts and lists are containers)."""
    first = structures[0]
    if isinstance(first, dict):
        return {key: _map_outputs(function, *(s[key] for s in structures)) for key in first}
    if isinstance(first, (list, tuple)) and not _is_leaf(first):
        return type(first)(_map_outputs(function, *(s[i] for s in structures)) for i in range(len(first)))
    return function(*structures)


def plan_targets(model: Any, x: Any, y_pred: Any, data_loss: Any, rng: np.random.Generator) -> TargetPlan:
    """Pick the target kind the loss accepts: the first that gives a finite loss, in the order the loss's
    name suggests. ``data_loss`` is tried on the whole structure; a compiled loss output by output, then
    as a whole through ``compute_loss``; without any loss the probe uses MSE, so real values."""
    tried: list[str] = []

    def uniform(kind: TargetKind) -> TargetPlan:
        return TargetPlan(_map_outputs(lambda output: (kind, _shape(output)), y_pred))

    if data_loss is not None:
        for kind in _order(_loss_text(data_loss)):
            plan = uniform(kind)
            if _accepts(lambda y: data_loss(y, y_pred), plan.draw(rng), tried):
                return plan
        raise ValueError(_no_fit(tried))

    def choose(loss_fn: Any, output: Any) -> tuple[TargetKind, tuple[int, ...]]:
        shape = _shape(output)
        kinds = _order(_loss_text(loss_fn))
        if loss_fn is None:
            return kinds[0], shape
        for kind in kinds:
            if _accepts(lambda y: loss_fn(y, output), make_target(kind, shape, rng), tried):
                return kind, shape
        return kinds[0], shape

    losses = _map_outputs(lambda loss, _: _callable_loss(loss), _per_output_losses(model, y_pred), y_pred)
    plan = TargetPlan(_map_outputs(choose, losses, y_pred))
    compiled = getattr(model, "compiled", False) or getattr(model, "_is_compiled", False)  # Keras 3 / tf_keras
    if not (compiled and getattr(model, "loss", None) is not None and hasattr(model, "compute_loss")):
        return plan
    import inspect

    try:
        takes_training = "training" in inspect.signature(model.compute_loss).parameters
    except (TypeError, ValueError):
        takes_training = False

    def whole(y: Any) -> Any:
        if takes_training:  # Keras 3; tf_keras 2.21's compute_loss has no training argument
            return model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
        import tensorflow as tf  # tf_keras' compiled loss reads y.shape.rank: tensors, as fit makes them

        return model.compute_loss(x=x, y=tf.nest.map_structure(tf.convert_to_tensor, y), y_pred=y_pred)

    for candidate in [plan] + [uniform(kind) for kind in TargetKind]:
        if _accepts(whole, candidate.draw(rng), tried):
            return candidate
    raise ValueError(_no_fit(tried))


def _no_fit(tried: list[str]) -> str:
    return (
        "no synthetic target fits the loss (tried "
        + "; ".join(dict.fromkeys(tried))[:400]
        + "): hand a batch ('batch' or 'dataset' in the set-up dict)"
    )


def _accepts(loss: Any, y: Any, tried: list[str]) -> bool:
    try:
        if _finite(loss(y)):
            return True
        tried.append("non-finite loss")
    except Exception as exc:  # noqa: BLE001
        tried.append(describe_exception(exc, 160))
    return False
