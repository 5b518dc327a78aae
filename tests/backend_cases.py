"""Keras 3 set-ups written once, run on whichever backend Keras was imported with.

The backend tests import this module in the pytest process (TensorFlow) and run it as a
script under ``KERAS_BACKEND=jax`` (or ``torch``) in ONE subprocess per backend, which
prints every case's verdicts as a JSON line: a Keras backend is fixed at import time.

``CASES`` maps a name to ``(make, preset)``. Most cases decay the same variables on every
backend; ``var_names_layer`` does not (shared FACTS: ``var_names`` are searched in
``layer/bias:0`` on TensorFlow, in the leaf on JAX and torch).
"""

from __future__ import annotations

import json
import os
import sys

import keras


def _model(layer_norm: bool = True, regularized: bool = False, dropout: bool = False):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(
        5, name="dense1", kernel_regularizer=keras.regularizers.L2(1e-3) if regularized else None
    )(inputs)
    if dropout:
        hidden = keras.layers.Dropout(0.3)(hidden)
    if layer_norm:
        hidden = keras.layers.LayerNormalization(name="layer_norm")(hidden)
    return keras.Model(inputs, keras.layers.Dense(3, name="dense2")(hidden))


def _no_decay_list(model):
    """What no-bias-norm leaves undecayed, by object: the backend-neutral way to exclude."""
    return [v for v in model.trainable_variables if v.name in ("bias", "gamma", "beta")]


def _compiled(optimizer, model=None, exclude=True):
    model = model or _model()
    if exclude:
        optimizer.exclude_from_weight_decay(var_list=_no_decay_list(model))
    model.compile(optimizer=optimizer, loss="mse")
    return model


def var_list_adamw():
    return _compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1))


def no_exclusions_adamw():
    return _compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), exclude=False)


def var_list_lion():
    return _compiled(keras.optimizers.Lion(1e-3, weight_decay=0.5))


def var_list_adafactor():
    return _compiled(keras.optimizers.Adafactor(1e-2, weight_decay=0.1))


def l2_regularizer_sgd():
    """Coupled L2 on dense1's kernel only: dense2's kernel is never decayed."""
    return _compiled(keras.optimizers.SGD(1e-2), model=_model(regularized=True), exclude=False)


def l2_regularizer_and_adamw():
    """The penalty AND the optimizer's decay on dense1's kernel: double decay."""
    return _compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), model=_model(regularized=True))


def dropout_adamw():
    return _compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), model=_model(dropout=True))


def accumulating_lion():
    """Gradient accumulation over 2 steps: decay only on the updating steps (the probe runs 4)."""
    return _compiled(keras.optimizers.Lion(1e-3, weight_decay=0.5, gradient_accumulation_steps=2))


def fine_tuning_rate_adamw():
    """lr*wd = 5e-7 per step (BERT fine-tuning): below float32's resolution unless amplified."""
    return _compiled(keras.optimizers.AdamW(5e-5, weight_decay=0.01), exclude=False)


def var_names_layer():
    """The keras-io habit ``var_names=["layer_norm", "bias"]``, naming a LAYER."""
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["layer_norm", "bias"])
    model = _model()
    model.compile(optimizer=optimizer, loss="mse")
    return model


def var_names_leaves():
    """Leaf names: the same selection on every backend (``bias`` is inside ``dense1/bias:0`` too)."""
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model = _model()
    model.compile(optimizer=optimizer, loss="mse")
    return model


def mixed_precision_inner_exclusions():
    """mixed_float16: compile wraps the optimizer in a LossScaleOptimizer; exclusions set on the
    inner one before wrapping hold."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _model()
        optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
        optimizer.exclude_from_weight_decay(var_list=_no_decay_list(model))
        model.compile(optimizer=optimizer, loss="mse")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model


def uncompiled_pair_with_data_loss():
    """Not compiled: a (model, optimizer, data_loss) dict, stepped with the set-up's own loss."""
    model = _model(regularized=True)
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_list=_no_decay_list(model))
    return {"model": model, "optimizer": optimizer, "data_loss": keras.losses.MeanSquaredError()}


def keras_hub_bert_keras_io():
    """A tiny keras_hub BertTextClassifier (random weights, no preprocessor) with the keras-io
    fine-tuning pattern: ``var_names=["bias", "gamma", "beta"]`` at lr 5e-5, wd 0.01. The
    embeddings stay decayed: wrong under kernels-only, right under no-bias-norm."""
    import keras_hub

    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    classifier = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=None)
    optimizer = keras.optimizers.AdamW(5e-5, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    classifier.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return classifier


SLOW_CASES = {"keras_hub_bert_keras_io": (keras_hub_bert_keras_io, "kernels-only")}
"""Run only when named: a keras_hub task compiles a larger step (about a minute on JAX, 2 CPUs)."""

CASES = {
    "var_list_adamw": (var_list_adamw, "no-bias-norm"),
    "no_exclusions_adamw": (no_exclusions_adamw, "no-bias-norm"),
    "var_list_lion": (var_list_lion, "no-bias-norm"),
    "var_list_adafactor": (var_list_adafactor, "no-bias-norm"),
    "l2_regularizer_sgd": (l2_regularizer_sgd, "no-bias-norm"),
    "l2_regularizer_and_adamw": (l2_regularizer_and_adamw, "no-bias-norm"),
    "dropout_adamw": (dropout_adamw, "no-bias-norm"),
    "accumulating_lion": (accumulating_lion, "no-bias-norm"),
    "fine_tuning_rate_adamw": (fine_tuning_rate_adamw, "no-bias-norm"),
    "var_names_layer": (var_names_layer, "no-bias-norm"),
    "var_names_leaves": (var_names_leaves, "no-bias-norm"),
    "mixed_precision_inner_exclusions": (mixed_precision_inner_exclusions, "no-bias-norm"),
    "uncompiled_pair_with_data_loss": (uncompiled_pair_with_data_loss, "no-bias-norm"),
}


def run_case(name: str) -> dict:
    """The verdict of one case: backend, each variable's outcome, and how it was measured."""
    from decay_audit.stages.verify import verify

    make, preset = {**CASES, **SLOW_CASES}[name]
    report = verify(make(), preset=preset, steps=2)
    return {
        "backend": report.backend,
        "ok": report.ok,
        "steps": report.steps,
        "decoupled_steps": {m.path: m.decoupled_steps for m in report.measurements},
        "outcomes": {m.path: m.outcome.value for m in report.measurements},
        "measured": {m.path: m.measured for m in report.measurements},
    }


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    names = sys.argv[1:] or list(CASES)
    print(json.dumps({name: run_case(name) for name in names}))
