"""Pins decay_audit.knowledge.keras to the installed Keras: a reorder or rename in a Keras
upgrade turns this red instead of silently mislabelling ``vars/<i>`` in .keras files."""

from __future__ import annotations

import json

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


# -- quantized and LoRA variants: what load_model rebuilds, and what save_own_variables writes --

ADAPTED = [
    ("Dense", {"units": 3}, (None, 4)),
    ("Dense", {"units": 3, "use_bias": False}, (None, 4)),
    ("EinsumDense", {"equation": "ab,bc->ac", "output_shape": 3, "bias_axes": "c"}, (None, 4)),
    ("EinsumDense", {"equation": "abc,cde->abde", "output_shape": (None, 2, 5)}, (None, 2, 4)),
    ("Embedding", {"input_dim": 10, "output_dim": 4}, (None, 3)),
    ("ReversibleEmbedding", {"input_dim": 10, "output_dim": 4}, (None, 3)),
    ("ReversibleEmbedding", {"input_dim": 10, "output_dim": 4, "tie_weights": False}, (None, 3)),
]
MODES = [None, "int8", "int4", "int4/-1", "float8"]


def _adapted_cases():
    for class_name, kwargs, shape in ADAPTED:
        for mode in MODES:
            if mode == "float8" and "Embedding" in class_name:
                continue  # Embedding has no float8 mode
            for lora in (False, True):
                if lora and kwargs.get("tie_weights") is False:
                    continue  # Keras 3.15 cannot build an untied ReversibleEmbedding with lora_rank
                if lora and mode == "float8":
                    continue  # Keras 3.15 cannot save float8 with LoRA (_get_kernel_with_merged_lora)
                yield class_name, kwargs, shape, mode, lora


ADAPTED_CASES = list(_adapted_cases())


@pytest.mark.parametrize(
    "class_name,kwargs,shape,mode,lora",
    ADAPTED_CASES,
    ids=[f"{c}-{'-'.join(f'{k}={v}' for k, v in kw.items())}-{m}-lora={lo}" for c, kw, _, m, lo in ADAPTED_CASES],
)
def test_quantized_and_lora_tables_match_installed_keras(class_name, kwargs, shape, mode, lora):
    from decay_audit.knowledge.keras import layer_variables, loaded_shape

    layer = getattr(L, class_name)(**kwargs)
    layer.build(shape)
    if mode is not None:
        base, _, block = mode.partition("/")
        config = keras.quantizers.Int4QuantizationConfig(block_size=int(block)) if block else None
        layer.quantize(base, config=config)
    if lora:
        layer.enable_lora(2)
    saved_config = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))["config"]
    rebuilt = getattr(L, class_name).from_config(layer.get_config())  # what load_model does
    rebuilt.build(shape)
    plan = layer_variables(class_name, saved_config)
    assert plan is not None
    assert [(s.leaf, s.trainable) for s in plan.loaded] == [(w.name, w.trainable) for w in rebuilt.weights]
    store: dict = {}
    layer.save_own_variables(store)
    stored = [store[str(i)] for i in range(len(store))]
    assert len(plan.stored) == len(stored)
    spec = [name for name in layer.variable_serialization_spec[layer.quantization_mode] if hasattr(layer, name)]
    spec = [n for n in spec if getattr(layer, n) is not None]
    assert [s.leaf for s in plan.stored] == spec[: len(plan.stored)]
    shapes = {s.leaf: tuple(v.shape) for s, v in zip(plan.stored, stored)}
    for slot, weight in zip(plan.loaded, rebuilt.weights):
        if not slot.stored:
            assert loaded_shape(slot, shapes, saved_config) == tuple(weight.shape), slot.leaf
        if slot.dtype is not None:
            assert slot.dtype == keras.backend.standardize_dtype(weight.dtype), slot.leaf


@pytest.mark.parametrize(
    "dtype,mode",
    [
        ({"class_name": "QuantizedDTypePolicy", "config": {"mode": "int8", "source_name": "float32"}}, "int8"),
        ({"class_name": "QuantizedDTypePolicy", "config": {"name": "int8_from_float32"}}, "int8"),
        ("int4/128_from_mixed_bfloat16", "int4/128"),
        ({"class_name": "DTypePolicy", "config": {"name": "mixed_bfloat16"}}, None),
        ("float32", None),
        ({"class_name": "DTypePolicyMap", "config": {}}, "?"),
        ({"class_name": "GPTQDTypePolicy", "config": {"mode": "gptq/4/128", "source_name": "float32"}}, "gptq/4/128"),
    ],
)
def test_quantization_mode_reads_every_policy_form(dtype, mode):
    from decay_audit.knowledge.keras import layer_variables, quantization_mode

    assert quantization_mode({"dtype": dtype}) == mode
    if mode is not None and not mode.startswith(("int8", "int4", "float8")):
        assert layer_variables("Dense", {"dtype": dtype, "units": 2}) is None  # positions, not guessed names


@pytest.mark.parametrize(
    "wrapped,shape",
    [
        (lambda: L.Conv2D(2, 3), (None, 6, 6, 3)),
        (lambda: L.Dense(3), (None, 4)),
        (lambda: L.Embedding(5, 3), (None, 2)),
    ],
    ids=["conv2d", "dense", "embedding"],
)
def test_spectral_normalization_table_matches_installed_keras(wrapped, shape):
    """Its own variables in save order; the first is the wrapped layer's own kernel (or table)
    object, which the table says through shared_from/shared_leaves."""
    layer = L.SpectralNormalization(wrapped())
    layer.build(shape)
    own = layer._trainable_variables + layer._non_trainable_variables
    slots = slots_for("SpectralNormalization", layer.get_config())
    assert [(s.leaf if not s.shared_from else v.name, s.trainable) for s, v in zip(slots, own)] == [
        (v.name, v.trainable) for v in own
    ]
    for slot, variable in zip(slots, own):
        inner = getattr(layer, slot.shared_from) if slot.shared_from else None
        if inner is not None:
            assert any(variable is w for w in inner.weights) and variable.name in slot.shared_leaves


def test_every_keras_wrapper_is_recognised_by_its_config():
    from decay_audit.knowledge.keras import wraps_a_layer

    wrappers = [
        L.Bidirectional(L.LSTM(2)),
        L.TimeDistributed(L.Dense(2)),
        L.SpectralNormalization(L.Dense(2)),
    ]
    assert all(wraps_a_layer(w.get_config()) for w in wrappers)
    assert not wraps_a_layer(L.Dense(2).get_config())
    assert not wraps_a_layer(L.MultiHeadAttention(2, 2).get_config())


def test_group_query_attention_sublayer_attributes_match_installed_keras():
    """GroupQueryAttention keeps its EinsumDense sublayers in private attributes (``_query_dense``),
    which the weights file keys them by; the table names the public attribute, the walker strips
    the underscore. Its class name is GroupedQueryAttention (the weights file's key)."""
    from decay_audit.knowledge.keras import SUBLAYER_ATTRIBUTES, SUBLAYER_CLASS_BY_PARENT

    layer = L.GroupQueryAttention(head_dim=2, num_query_heads=2, num_key_value_heads=1)
    layer.build((None, 3, 4), (None, 3, 4))
    assert type(layer).__name__ == "GroupedQueryAttention"
    for name in ("GroupQueryAttention", "GroupedQueryAttention"):
        for attribute in SUBLAYER_ATTRIBUTES[name]:
            sublayer = getattr(layer, f"_{attribute}")
            assert type(sublayer).__name__ == SUBLAYER_CLASS_BY_PARENT[(name, attribute)]
    created = [v.path for v in layer.weights]
    assert created == [
        f"{layer.name}/{sub}/{leaf}"
        for sub in ("query", "key", "value", "attention_output")
        for leaf in ("kernel", "bias")
    ]
