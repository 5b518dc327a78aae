"""SavedModel exports of real library models (keras_hub backbones, a transfer-learning model with a
frozen base, tf_keras): one row per variable, one variable per path, Keras' own paths, frozen
variables non-trainable and never decayed, kinds equal to the owning layer's role."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from conftest import KERAS_ROLES

from decay_audit import scan
from decay_audit.kinds import Kind

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
keras = pytest.importorskip("keras")
keras_hub = pytest.importorskip("keras_hub")

# Roles of the variables keras_hub 0.32 layer classes create themselves (read from their source).
HUB_ROLES = {
    ("ReversibleEmbedding", "embeddings"): Kind.EMBEDDING,
    ("ReversibleEmbedding", "reverse_embeddings"): Kind.KERNEL,  # untied LM head: hidden states x matrix
    ("T5LayerNorm", "weight"): Kind.NORM,
    ("T5MultiHeadAttention", "embeddings"): Kind.EMBEDDING,  # relative_attention_bias, per distance bucket
    ("WindowAttention", "relative_position_bias_table"): Kind.EMBEDDING,
    ("XLNetEncoder", "content_attention_bias"): Kind.BIAS,  # added to the query
    ("XLNetEncoder", "positional_attention_bias"): Kind.BIAS,
    ("XLNetEncoder", "segment_attention_bias"): Kind.BIAS,
    ("XLNetEncoder", "segment_encoding"): Kind.EMBEDDING,  # one row per same/different segment
    ("XLNetAttentionMaskLayer", "mask_emb"): Kind.EMBEDDING,
    ("RelativeEmbedding", "rel_embedding"): Kind.EMBEDDING,
    ("LlamaLayerNorm", "scale"): Kind.NORM,
    ("ViTPatchingAndEmbedding", "class_token"): Kind.EMBEDDING,
    ("PositionEmbedding", "embeddings"): Kind.EMBEDDING,
}

BACKBONES = {
    "t5": lambda: keras_hub.models.T5Backbone(
        vocabulary_size=50,
        num_layers=2,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        key_value_dim=8,
        tie_embedding_weights=False,
    ),
    "swin": lambda: keras_hub.models.SwinTransformerBackbone(
        image_shape=(32, 32, 3), embed_dim=8, depths=[2, 2], num_heads=[2, 2], window_size=4, patch_size=4
    ),
    "xlnet": lambda: keras_hub.models.XLNetBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32
    ),
    "deberta_v3": lambda: keras_hub.models.DebertaV3Backbone(
        vocabulary_size=50,
        num_layers=1,
        num_heads=2,
        hidden_dim=16,
        intermediate_dim=32,
        max_sequence_length=16,
        bucket_size=4,
    ),
    "llama": lambda: keras_hub.models.LlamaBackbone(
        vocabulary_size=50,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        tie_word_embeddings=False,
    ),
    "vit": lambda: keras_hub.models.ViTBackbone(
        image_shape=(16, 16, 3), patch_size=4, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32
    ),
    "bert": lambda: keras_hub.models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=16
    ),
}


def transfer_model():
    """A frozen pretrained-style base under a new head, the usual fine-tuning set-up."""
    base = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, name="base_conv"),
            keras.layers.BatchNormalization(name="base_bn"),
            keras.layers.GlobalAveragePooling2D(),
        ],
        name="base",
    )
    base.trainable = False
    inputs = keras.Input((8, 8, 3))
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(base(inputs)))


def _roles(model) -> dict[int, Kind | str]:
    roles: dict[int, Kind | str] = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        builtin = type(layer).__module__.startswith("keras.")
        for variable in list(layer._trainable_variables) + list(layer._non_trainable_variables):
            key = (type(layer).__name__, variable.name)
            if (not builtin or key in HUB_ROLES) and key in HUB_ROLES:
                roles[id(variable)] = HUB_ROLES[key]
            elif builtin and variable.name in KERAS_ROLES:
                roles[id(variable)] = KERAS_ROLES[variable.name]
            else:
                roles[id(variable)] = f"{key[0]}.{key[1]}"
    return roles


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    built = {}
    for name, make in {**BACKBONES, "transfer": transfer_model}.items():
        model = make()
        directory = tmp_path_factory.mktemp(f"export_{name}") / name
        model.export(str(directory), verbose=False)
        roles = _roles(model)
        expected = [(w.path, tuple(w.shape), w.trainable, roles[id(w)]) for w in model.weights]
        built[name] = (directory, expected)
    unknown = sorted({e[3] for _, expected in built.values() for e in expected if not isinstance(e[3], Kind)})
    assert not unknown, f"no expected role for {unknown}"
    return built


@pytest.mark.parametrize("name", [*BACKBONES, "transfer"])
def test_export_lists_each_variable_once_by_its_keras_path(exports, name):
    directory, expected = exports[name]
    report = scan(directory)
    paths = [v.record.path for v in report.variables]
    assert len(paths) == len(expected) == len(set(paths))  # one row per variable, one variable per path
    # Keras itself gives T5's two relative_attention_bias tables one path; the second is numbered.
    assert Counter(p.split("#")[0] for p in paths) == Counter(e[0] for e in expected)
    by_path = {}
    for variable in report.variables:
        by_path.setdefault(variable.record.path.split("#")[0], []).append(variable)
    for path, shape, trainable, role in expected:
        candidates = by_path[path]
        match = next(v for v in candidates if v.record.shape == shape)
        candidates.remove(match)
        assert match.record.trainable is trainable, path
        assert match.classification.kind is role, (path, match.classification)
        if not trainable:
            assert match.decision.decay is False, path


def test_frozen_base_of_an_export_is_not_trainable_and_not_decayed(exports):
    directory, expected = exports["transfer"]
    report = scan(directory)
    frozen = {v.record.path: v for v in report.variables if v.record.path.startswith("base/")}
    assert set(frozen) == {
        "base/base_conv/kernel",
        "base/base_conv/bias",
        "base/base_bn/gamma",
        "base/base_bn/beta",
        "base/base_bn/moving_mean",
        "base/base_bn/moving_variance",
    }
    assert not any(v.record.trainable or v.decision.decay for v in frozen.values())
    assert frozen["base/base_conv/kernel"].classification.kind is Kind.KERNEL
    decayed = [v.record.path for v in report.variables if v.decision.decay]
    assert decayed == ["head/kernel"]


def test_t5_export_paths_are_rebuilt_from_layer_scopes(exports):
    directory, _ = exports["t5"]
    report = scan(directory)
    paths = {v.record.path for v in report.variables}
    assert "transformer_encoder_layer_0/self_attention/query_projector/kernel" in paths
    assert "transformer_decoder_layer_1/cross_attention/output_projector/kernel" in paths
    assert any("paths rebuilt from the layer scopes" in n for n in report.inventory.notes)


def test_tf_keras_savedmodel_frozen_layer_is_not_trainable(tmp_path):
    """tf_keras keeps each tf.Variable's trainable flag True when a layer is frozen; keras_metadata.pb
    says ``"trainable": false`` for the layer (and for a frozen nested model)."""
    import tf_keras

    inner = tf_keras.Sequential([tf_keras.layers.Dense(4, name="inner_dense")], name="inner")
    inputs = tf_keras.Input((3,))
    frozen = tf_keras.layers.Dense(4, name="frozen_dense")
    x = frozen(inputs)
    x = inner(x)
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1, name="head")(x))
    frozen.trainable = False
    inner.trainable = False
    model.save(str(tmp_path / "k2"))
    report = scan(tmp_path / "k2")
    trainable = {v.record.path: v.record.trainable for v in report.variables}
    assert trainable == {w.name[:-2]: any(w is t for t in model.trainable_weights) for w in model.weights}
    assert [v.record.path for v in report.variables if v.decision.decay] == ["head/kernel"]


def test_tf_saved_model_save_of_a_keras3_model_says_trainability_unknown(tmp_path):
    """``tf.saved_model.save(keras3_model)`` writes no keras metadata and no trainable-variables list,
    and a frozen layer's tf.Variable keeps its flag True: the file cannot tell a frozen base from a
    trained head, so those rows say "unknown" (decided as if trainable, visibly) instead of guessing;
    BatchNormalization's moving statistics, created non-trainable, stay known."""
    import tensorflow as tf

    from decay_audit.policy import UNKNOWN_TRAINABILITY

    model = transfer_model()
    tf.saved_model.save(model, str(tmp_path / "k3"))
    report = scan(tmp_path / "k3")
    rows = {r["path"]: r["trainable"] for r in (v.row() for v in report.variables)}
    assert rows == {
        "head/kernel": "unknown",
        "head/bias": "unknown",
        "base/base_conv/kernel": "unknown",  # frozen in the model; the file cannot say so
        "base/base_conv/bias": "unknown",
        "base/base_bn/gamma": "unknown",
        "base/base_bn/beta": "unknown",
        "base/base_bn/moving_mean": False,
        "base/base_bn/moving_variance": False,
    }
    by_path = {v.record.path: v for v in report.variables}
    assert UNKNOWN_TRAINABILITY in by_path["base/base_conv/kernel"].decision.reason
    assert UNKNOWN_TRAINABILITY not in by_path["base/base_bn/moving_mean"].decision.reason
    assert any("trainability of 6 variables unknown" in n for n in report.inventory.notes)


def test_tf_saved_model_save_of_a_tf_keras_model_reads_its_trainable_variables_list(tmp_path):
    """tf_keras tracks ``model.trainable_variables`` in the object graph, which leaves out a frozen
    layer's variables (their tf.Variable flag stays True): that list is the record, kept as known."""
    import tensorflow as tf
    import tf_keras

    inputs = tf_keras.Input((3,))
    frozen = tf_keras.layers.Dense(4, name="frozen_dense")
    model = tf_keras.Model(inputs, tf_keras.layers.Dense(1, name="head")(frozen(inputs)))
    frozen.trainable = False
    tf.saved_model.save(model, str(tmp_path / "k2"))
    assert not (tmp_path / "k2" / "keras_metadata.pb").exists()  # only the object graph can tell
    report = scan(tmp_path / "k2")
    assert all(v.record.trainable_known for v in report.variables)
    trainable = {v.record.path: v.record.trainable for v in report.variables}
    assert trainable == {w.name[:-2]: any(w is t for t in model.trainable_weights) for w in model.weights}
    assert [v.record.path for v in report.variables if v.decision.decay] == ["head/kernel"]


def test_a_plain_tf_module_keeps_each_variables_own_trainable_flag(tmp_path):
    """A tf.Module has no layers to freeze: ``tf.Module.trainable_variables`` reads the flag itself."""
    import tensorflow as tf

    module = tf.Module()
    module.w = tf.Variable(tf.ones((2, 2)), name="w")
    module.frozen = tf.Variable(tf.ones((2,)), trainable=False, name="frozen")
    tf.saved_model.save(module, str(tmp_path / "module"))
    records = {v.record.path: v.record for v in scan(tmp_path / "module").variables}
    assert {p: (r.trainable, r.trainable_known) for p, r in records.items()} == {
        "w": (True, True),
        "frozen": (False, True),
    }
