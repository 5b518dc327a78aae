"""Synthetic inputs and labels for tf_keras models that have no ``model.inputs`` to follow
(subclassed models, transformers TF models): read from the signature they declare instead.
They make batches, so they live with the data; only the backend's test for a tf_keras model is
shared, and the imports run one way (data -> backend).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from decay_audit.probe.backends.tf_keras import is_tf_keras_object
from decay_audit.probe.data.targets import TargetKind, make_target


def signature_inputs(model: Any, batch_size: int, rng: np.random.Generator) -> Any | None:
    """A batch for a tf_keras model without ``model.inputs`` (subclassed; transformers TF models),
    from the spec it declares: transformers' ``input_signature`` (``input_ids``,
    ``attention_mask``, ``token_type_ids``, ...), else the save spec tf_keras records on the
    first call. Ids inside ``config.vocab_size`` (else the smallest embedding table), masks
    of ones, type ids 0, positions 0..n-1, sequences no longer than
    ``max_position_embeddings``. None for other models (without importing TensorFlow)."""
    if not is_tf_keras_object(model) or getattr(model, "inputs", None):
        return None
    import tensorflow as tf

    signature = getattr(model, "input_signature", None)
    if not isinstance(signature, dict):
        get_spec = getattr(model, "_get_save_spec", None)
        signature = get_spec(dynamic_batch=True) if callable(get_spec) else None
    if signature is None:
        return None
    config = getattr(model, "config", None)
    length = min(8, int(getattr(config, "max_position_embeddings", 8) or 8))
    dims = [getattr(layer, "input_dim", None) for layer in model._flatten_layers(include_self=False)]
    tables = [t for t in dims if isinstance(t, int) and t > 0]
    vocabulary = max(int(getattr(config, "vocab_size", 0) or (min(tables) if tables else 2)), 1)

    def make(spec: Any, key: str) -> np.ndarray:
        shape = tuple(batch_size if i == 0 else (length if d is None else int(d)) for i, d in enumerate(spec.shape))
        dtype = spec.dtype.as_numpy_dtype
        if not np.issubdtype(dtype, np.integer):
            return rng.normal(size=shape).astype(dtype)
        if "mask" in key:
            return np.ones(shape, dtype)
        if "type" in key or "segment" in key:
            return np.zeros(shape, dtype)
        if "position" in key:
            return np.broadcast_to(np.arange(shape[-1], dtype=dtype), shape).copy()
        return rng.integers(0, vocabulary, size=shape).astype(dtype)

    if isinstance(signature, dict):
        return {key: make(spec, key) for key, spec in signature.items()}
    return tf.nest.map_structure(lambda spec: make(spec, str(spec.name or "")), signature)


def own_loss_labels(model: Any, x: Any, rng: np.random.Generator) -> np.ndarray | None:
    """Class ids under the logits for a transformers model compiled without a loss: it computes
    its own, and its ``train_step`` moves a tensor ``y`` into the ``labels`` input. None otherwise."""
    if not getattr(model, "_using_dummy_loss", False):
        return None
    prediction = model(x, training=False)
    outputs = [
        v
        for v in (prediction.values() if isinstance(prediction, dict) else [prediction])
        if v is not None and hasattr(v, "shape")
    ]
    logits: Any = (  # a tensor: the "logits" entry is checked to be there
        prediction.get("logits")
        if isinstance(prediction, dict) and prediction.get("logits") is not None
        else outputs[0]
    )
    return make_target(TargetKind.SPARSE, tuple(int(d) for d in logits.shape), rng)
