"""Synthetic batches shaped from the model's own inputs and outputs: nothing is downloaded."""

from __future__ import annotations

from typing import Any

import numpy as np


def _vocabulary(model: Any) -> int:
    """Integer inputs feed embeddings: stay below the smallest table."""
    sizes = [getattr(layer, "input_dim", None) for layer in model._flatten_layers(include_self=False)]
    sizes = [s for s in sizes if isinstance(s, int) and s > 0]
    return min(sizes) if sizes else 2


def _input_specs(model: Any) -> list[tuple[tuple[int | None, ...], str]]:
    inputs = getattr(model, "inputs", None)
    try:
        if inputs:
            return [(tuple(t.shape), str(getattr(t.dtype, "name", t.dtype))) for t in inputs]
    except (AttributeError, ValueError):
        pass
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    for shape in shapes.values():
        if isinstance(shape, (tuple, list)) and shape and all(isinstance(d, (int, type(None))) for d in shape):
            return [(tuple(shape), "float32")]
    raise ValueError("cannot tell the model's input shape: build or call it once before verifying")


def synthetic_batch(model: Any, batch_size: int, rng: np.random.Generator) -> tuple[Any, Any]:
    from decay_audit.probe.backends.tf_keras import signature_batch

    declared = signature_batch(model, batch_size, rng)  # transformers TF models: input_signature, no inputs
    if declared is not None:
        return declared
    specs = _input_specs(model)
    vocabulary = _vocabulary(model)
    xs = []
    for shape, dtype in specs:
        concrete = tuple(batch_size if d is None else int(d) for d in shape)
        if "int" in dtype:
            xs.append(rng.integers(0, vocabulary, size=concrete).astype(dtype))
        else:
            xs.append(rng.normal(size=concrete).astype("float32"))
    x = xs[0] if len(xs) == 1 else xs
    y_pred = model(x, training=False)
    loss = getattr(model, "loss", None)
    if isinstance(y_pred, dict):
        return x, {key: _target(value, _loss_name(loss, key), rng) for key, value in y_pred.items()}
    if isinstance(y_pred, (list, tuple)):
        return x, [_target(value, _loss_name(loss, index), rng) for index, value in enumerate(y_pred)]
    return x, _target(y_pred, _loss_name(loss, 0), rng)


def _loss_name(loss: Any, key: Any) -> str:
    """The compiled loss of one output, by position (list) or name (dict), as lower-case text."""
    if isinstance(loss, dict):
        loss = loss.get(key)
    elif isinstance(loss, (list, tuple)):
        loss = loss[key] if isinstance(key, int) and key < len(loss) else None
    name = loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__) if loss is not None else ""
    return name.lower()


def _target(y_pred: Any, loss_name: str, rng: np.random.Generator) -> np.ndarray:
    """A target the loss accepts: class ids for sparse losses, probabilities for cross-entropies."""
    shape = tuple(int(d) for d in y_pred.shape)
    if "sparse" in loss_name:
        return rng.integers(0, max(shape[-1], 1), size=shape[:-1]).astype("int32")
    if "entropy" in loss_name or "hinge" in loss_name:
        return rng.uniform(0, 1, size=shape).astype("float32")
    return rng.normal(size=shape).astype("float32")
