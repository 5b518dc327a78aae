"""Pins decay_audit.knowledge.keras to the installed Keras: a reorder or rename in a Keras
upgrade turns this red instead of silently mislabelling ``vars/<i>`` in .keras files."""

from __future__ import annotations

import keras
import pytest

from decay_audit.knowledge.keras import LAYER_VARIABLES, slots_for, snake_case

L = keras.layers

# (class name, constructor kwargs, build input shape)
CASES = [
    ("Dense", {"units": 3}, (None, 4)),
    ("Dense", {"units": 3, "use_bias": False}, (None, 4)),
    ("EinsumDense", {"equation": "ab,bc->ac", "output_shape": 3, "bias_axes": "c"}, (None, 4)),
    ("EinsumDense", {"equation": "ab,bc->ac", "output_shape": 3}, (None, 4)),
    ("Conv1D", {"filters": 2, "kernel_size": 3}, (None, 8, 3)),
    ("Conv2D", {"filters": 2, "kernel_size": 3, "use_bias": False}, (None, 8, 8, 3)),
    ("Conv3D", {"filters": 2, "kernel_size": 1}, (None, 4, 4, 4, 3)),
    ("Conv1DTranspose", {"filters": 2, "kernel_size": 3}, (None, 8, 3)),
    ("Conv2DTranspose", {"filters": 2, "kernel_size": 3}, (None, 8, 8, 3)),
    ("Conv3DTranspose", {"filters": 2, "kernel_size": 1}, (None, 4, 4, 4, 3)),
    ("DepthwiseConv1D", {"kernel_size": 3}, (None, 8, 3)),
    ("DepthwiseConv2D", {"kernel_size": 3}, (None, 8, 8, 3)),
    ("SeparableConv1D", {"filters": 2, "kernel_size": 3}, (None, 8, 3)),
    ("SeparableConv2D", {"filters": 2, "kernel_size": 3, "use_bias": False}, (None, 8, 8, 3)),
    ("LSTMCell", {"units": 3}, (None, 4)),
    ("GRUCell", {"units": 3}, (None, 4)),
    ("SimpleRNNCell", {"units": 3, "use_bias": False}, (None, 4)),
    ("Embedding", {"input_dim": 10, "output_dim": 4}, (None, 3)),
    ("ReversibleEmbedding", {"input_dim": 10, "output_dim": 4}, (None, 3)),
    ("ReversibleEmbedding", {"input_dim": 10, "output_dim": 4, "tie_weights": False}, (None, 3)),
    ("BatchNormalization", {}, (None, 4)),
    ("BatchNormalization", {"center": False}, (None, 4)),
    ("BatchNormalization", {"scale": False}, (None, 4)),
    ("LayerNormalization", {}, (None, 4)),
    ("LayerNormalization", {"center": False}, (None, 4)),
    ("GroupNormalization", {"groups": 2}, (None, 4)),
    ("RMSNormalization", {}, (None, 4)),
    ("PReLU", {}, (None, 4)),
    ("Normalization", {}, (None, 4)),
]


@pytest.mark.parametrize(
    "class_name,kwargs,shape", CASES, ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for c, kw, _ in CASES]
)
def test_table_matches_installed_keras(class_name, kwargs, shape):
    layer = getattr(L, class_name)(**kwargs)
    layer.build(shape)
    built = [(v.name, v.trainable) for v in layer._trainable_variables + layer._non_trainable_variables]
    predicted = [(slot.leaf, slot.trainable) for slot in slots_for(class_name, layer.get_config())]
    assert predicted == built


@pytest.mark.parametrize(
    "class_name,build",
    [
        ("Attention", lambda layer: layer.build([(None, 2, 3), (None, 2, 3)])),
        ("AdditiveAttention", lambda layer: layer.build([(None, 2, 3), (None, 2, 3)])),
    ],
)
@pytest.mark.parametrize("kwargs", [{}, {"use_scale": True}])
def test_attention_scales_match(class_name, build, kwargs):
    layer = getattr(L, class_name)(**kwargs)
    build(layer)
    built = [v.name for v in layer._trainable_variables + layer._non_trainable_variables]
    assert [slot.leaf for slot in slots_for(class_name, layer.get_config())] == built


def test_every_table_class_exists_in_keras():
    from keras.src.layers.rnn import conv_lstm

    missing = [name for name in LAYER_VARIABLES if not hasattr(L, name) and not hasattr(conv_lstm, name)]
    assert missing == []


def test_conv_lstm_cell_order():
    layer = L.ConvLSTM1D(2, 3)
    layer.build((None, 4, 5, 3))
    cell = layer.cell
    built = [(v.name, v.trainable) for v in cell._trainable_variables + cell._non_trainable_variables]
    assert [(s.leaf, s.trainable) for s in slots_for("ConvLSTMCell", layer.get_config())] == built


@pytest.mark.parametrize("class_name", ["PReLU", "BatchNormalization", "Conv2DTranspose", "LSTMCell", "Dense"])
def test_snake_case_matches_keras_naming(class_name):
    from keras.src.utils.naming import to_snake_case

    assert snake_case(class_name) == to_snake_case(class_name)
