"""The long tail of Keras and Hugging Face models, read as the model that trains them names them:
wrappers that take their wrapped layer's variable as their own (SpectralNormalization), attention
layers that build their sublayers in ``build`` (GroupQueryAttention), weights-only files of
Sequential and subclassed models (no trainability recorded: "unknown", decided visibly), position
tables of any name (Whisper), and a subclassed model's own tokens and temperature.

The truth is what Keras (``keras.saving.load_model``, or for a weights-only file the live model that
wrote it) or transformers (the TF model's ``trainable_weights``) gives: count, paths, order,
trainability; kinds follow the owning layer's role."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from decay_audit import scan
from decay_audit.kinds import Kind, Preset
from decay_audit.knowledge import transformers as hf_names
from decay_audit.policy import UNKNOWN_TRAINABILITY

L = keras.layers


def _truth(model):
    """(path, trainable) in ``model.weights`` order: trainable means in ``model.trainable_weights``."""
    trainable = {id(v) for v in model.trainable_weights}
    return [(v.path, id(v) in trainable) for v in model.weights]


def _rows(report):
    return [(v.record.path, v.record.trainable) for v in report.variables]


def _kinds(report):
    return {v.record.path: v.classification.kind for v in report.variables}


# -- wrappers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory):
    """SpectralNormalization around a Conv2D and a Dense, Bidirectional(LSTM), TimeDistributed(Dense)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 3))
    x = L.SpectralNormalization(L.Conv2D(4, 3, name="sn_conv"), name="sn")(inputs)
    x = L.Reshape((16, 4))(x)
    x = L.SpectralNormalization(L.Dense(5, name="sn_dense"), name="sn2")(x)
    # named: auto names count up per process, and other tests in the worker may have built an LSTM
    x = L.Bidirectional(L.LSTM(3, return_sequences=True, name="lstm"), name="bi")(x)
    x = L.TimeDistributed(L.Dense(2, name="td_dense"), name="td")(x)
    model = keras.Model(inputs, x, name="wrapped")
    directory = tmp_path_factory.mktemp("wrapped")
    paths = {"keras": directory / "m.keras", "h5": directory / "m.h5", "weights": directory / "m.weights.h5"}
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.save_weights(paths["weights"])
    return model, paths


def test_wrapper_variables_are_listed_once_with_load_model_paths_order_and_trainability(wrapped):
    _, paths = wrapped
    report = scan(paths["keras"])
    truth = _truth(keras.saving.load_model(paths["keras"]))
    assert _rows(report) == truth
    assert len(truth) == 14  # 2 x (kernel, vector_u, bias) + 2 x 3 LSTM + 2 Dense
    kinds = _kinds(report)
    assert kinds["sn_conv/kernel"] is kinds["sn_dense/kernel"] is Kind.KERNEL
    assert kinds["sn/vector_u"] is kinds["sn2/vector_u"] is Kind.STATISTIC
    assert kinds["sn_conv/bias"] is Kind.BIAS
    assert kinds["forward_lstm/lstm_cell/recurrent_kernel"] is Kind.KERNEL
    decayed = {v.record.path for v in report.variables if v.decision.decay}
    assert decayed == {p for p, _ in truth if p.endswith("kernel")}


def test_wrapper_weights_file_names_the_live_models_variables(wrapped):
    model, paths = wrapped
    report = scan(paths["weights"])
    truth = _truth(model)
    # Without a config, the class of the layer TimeDistributed wraps is unknown, so its leaves stay
    # positions (var_0, var_1); everything else is named, in the live model's order.
    paths = [v.record.path for v in report.variables]
    assert paths[:-2] == [p for p, _ in truth][:-2]
    assert paths[-2:] == ["td/td_dense/var_0", "td/td_dense/var_1"] and len(paths) == len(truth)
    by_path = {v.record.path: v for v in report.variables}
    assert by_path["sn/vector_u"].record.trainable is False and by_path["sn/vector_u"].record.trainable_known
    assert by_path["sn/sn_conv/kernel"].classification.kind is Kind.KERNEL


def test_legacy_h5_wrappers_are_read_as_load_model_rebuilds_them(wrapped):
    _, paths = wrapped
    report = scan(paths["h5"])
    assert _rows(report) == _truth(keras.saving.load_model(paths["h5"]))
    vectors = [v for v in report.variables if v.record.leaf == "vector_u"]
    assert len(vectors) == 2
    assert all(not v.record.trainable and not v.decision.decay for v in vectors)
    assert all(v.classification.kind is Kind.STATISTIC for v in vectors)


# -- attention layers that build their sublayers in build ----------------------------------------


@pytest.fixture(scope="module")
def attention(tmp_path_factory):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5, 8))
    x = L.GroupQueryAttention(head_dim=4, num_query_heads=4, num_key_value_heads=2, name="gqa")(inputs, inputs)
    x = L.GroupQueryAttention(head_dim=2, num_query_heads=2, num_key_value_heads=1, use_bias=False, name="gqa_nobias")(
        x, x
    )
    x = L.MultiHeadAttention(2, 4, name="mha")(x, x)
    model = keras.Model(inputs, x, name="att")
    directory = tmp_path_factory.mktemp("attention")
    paths = {"keras": directory / "a.keras", "weights": directory / "a.weights.h5"}
    model.save(paths["keras"])
    model.save_weights(paths["weights"])
    return model, paths


@pytest.mark.parametrize("fmt", ["keras", "weights"])
def test_attention_sublayers_are_named_as_keras_names_them(attention, fmt):
    model, paths = attention
    report = scan(paths[fmt])
    truth = _truth(keras.saving.load_model(paths["keras"]) if fmt == "keras" else model)
    assert [p for p, _ in _rows(report)] == [p for p, _ in truth]
    assert len(truth) == 20  # gqa 4 x (kernel, bias), gqa_nobias 4 kernels, mha 4 x (kernel, bias)
    assert [v.record.path for v in report.variables][:2] == ["gqa/query/kernel", "gqa/query/bias"]
    for v in report.variables:
        assert v.classification.kind is (Kind.KERNEL if v.record.leaf == "kernel" else Kind.BIAS), v.record.path
        assert v.record.leaf_known


# -- weights-only files: model name prefix, and trainability the file cannot know ------------------


@pytest.fixture(scope="module")
def weights_only(tmp_path_factory):
    keras.utils.set_random_seed(0)
    sequential = keras.Sequential(
        [keras.Input((4,)), L.Dense(3, name="d1"), L.BatchNormalization(name="bn"), L.Dense(2, name="d2")],
        name="seq",
    )
    sequential.get_layer("d1").trainable = False
    built = keras.Sequential([L.Dense(3, name="e1"), L.Dense(2, name="e2")], name="seq_built")
    built.build((None, 4))
    inputs = keras.Input((4,))
    functional = keras.Model(inputs, L.Dense(2, name="f1")(inputs), name="func")
    directory = tmp_path_factory.mktemp("weights_only")
    models = {"seq": sequential, "seq_built": built, "func": functional}
    for name, model in models.items():
        model.save_weights(directory / f"{name}.weights.h5")
    return models, directory


@pytest.mark.parametrize("name", ["seq", "seq_built", "func"])
def test_weights_file_paths_are_the_live_models(weights_only, name):
    models, directory = weights_only
    report = scan(directory / f"{name}.weights.h5")
    truth = _truth(models[name])
    # Keys sort by name (batch_normalization before dense); the order is the list's, as saved.
    assert [p for p, _ in _rows(report)] == [p for p, _ in truth]
    prefix = "" if name == "func" else f"{name}/"
    assert all(v.record.path.startswith(prefix) for v in report.variables)


def test_weights_file_says_trainability_unknown_and_decides_visibly(weights_only):
    models, directory = weights_only
    report = scan(directory / "seq.weights.h5", preset=Preset.KERNELS_ONLY)
    by_path = {v.record.path: v for v in report.variables}
    frozen = by_path["seq/d1/kernel"]  # frozen in the model that wrote the file; the file cannot say so
    assert not frozen.record.trainable_known
    assert frozen.decision.decay and UNKNOWN_TRAINABILITY in frozen.decision.reason
    assert by_path["seq/bn/moving_mean"].record.trainable_known  # BatchNormalization never trains it
    assert not by_path["seq/bn/moving_mean"].record.trainable
    assert UNKNOWN_TRAINABILITY not in by_path["seq/bn/moving_mean"].decision.reason
    unknown = [v for v in report.variables if not v.record.trainable_known]
    assert len(unknown) == 6  # d1 (2), bn gamma/beta, d2 (2)
    assert any("trainability of 6 variables unknown" in n for n in report.notes)
    rows = {r["path"]: r for r in report.to_dataframe().to_dict("records")}
    assert rows["seq/d1/kernel"]["trainable"] == "unknown"
    assert rows["seq/bn/moving_mean"]["trainable"] is False


def test_unknown_trainability_keeps_json_and_csv_valid(weights_only):
    from conftest import run_cli

    from decay_audit.files import validate

    _, directory = weights_only
    result = run_cli("scan", str(directory / "seq.weights.h5"), "--format", "json")
    document = json.loads(result.stdout)
    validate(document, "scan", "scan output")
    trainable = {v["path"]: v["trainable"] for v in document["result"]["variables"]}
    assert trainable["seq/d1/kernel"] == "unknown" and trainable["seq/bn/moving_variance"] is False
    csv = run_cli("scan", str(directory / "seq.weights.h5"), "--format", "csv")
    assert csv.returncode == result.returncode and ",unknown," in csv.stdout


def test_a_keras_file_with_a_config_knows_trainability(attention):
    _, paths = attention
    assert all(v.record.trainable_known for v in scan(paths["keras"]).variables)


# -- a subclassed model's own tokens and temperature ------------------------------------------------


@keras.saving.register_keras_serializable("test_long_tail")
class TokenModel(keras.Model):
    """A ViT-style head: a learned (1, 1, width) [CLS] token and a scalar temperature of its own."""

    def __init__(self, width=8, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        self.proj = L.Dense(width, name="proj")

    def build(self, input_shape):
        self.cls_token = self.add_weight(name="cls_token", shape=(1, 1, self.width))
        self.temperature = self.add_weight(name="temperature", shape=(), initializer="ones")
        self.proj.build(input_shape)

    def call(self, x):
        x = self.proj(x)
        tokens = keras.ops.tile(self.cls_token, (keras.ops.shape(x)[0], 1, 1))
        return keras.ops.concatenate([tokens, x], axis=1) * self.temperature

    def get_config(self):
        return {**super().get_config(), "width": self.width}


@pytest.fixture(scope="module")
def token_model(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = TokenModel(name="tok")
    model(np.zeros((2, 3, 8), "float32"))
    directory = tmp_path_factory.mktemp("tokens")
    model.save(directory / "t.keras")
    model.save_weights(directory / "t.weights.h5")
    return model, directory


@pytest.mark.parametrize("source", ["live", "keras", "weights"])
def test_tokens_and_temperature_are_embedding_and_scale_never_decayed(token_model, source):
    model, directory = token_model
    target = {"live": model, "keras": directory / "t.keras", "weights": directory / "t.weights.h5"}[source]
    report = scan(target)
    truth = _truth(model)
    assert len(report.variables) == len(truth) == 4
    assert [t for _, t in _rows(report)] == [t for _, t in truth]
    # The .keras and .weights.h5 files store the model's own variables by position only.
    assert [v.record.path.rsplit("/", 1)[0] for v in report.variables] == [p.rsplit("/", 1)[0] for p, _ in truth]
    token, temperature = report.variables[0], report.variables[1]
    assert token.record.shape == (1, 1, 8) and temperature.record.shape == ()
    assert token.classification.kind is Kind.EMBEDDING
    assert temperature.classification.kind is Kind.SCALE
    assert not token.decision.decay and not temperature.decision.decay
    if source == "live":
        assert [v.record.path for v in report.variables] == [p for p, _ in truth]


# -- position tables of any name ----------------------------------------------------------------


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    import tensorflow as tf
    from transformers import TFWhisperModel, WhisperConfig

    tf.keras.utils.set_random_seed(0)
    config = WhisperConfig(
        vocab_size=40,
        num_mel_bins=4,
        encoder_layers=1,
        decoder_layers=1,
        d_model=8,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=8,
        decoder_ffn_dim=8,
        max_source_positions=6,
        max_target_positions=10,
        decoder_start_token_id=1,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    model = TFWhisperModel(config)
    model(tf.zeros((1, 4, 12)), decoder_input_ids=tf.zeros((1, 2), tf.int32))
    directory = tmp_path_factory.mktemp("whisper")
    model.save_pretrained(str(directory))
    return model, directory


def test_whisper_position_tables_are_embeddings_with_transformers_trainability(whisper):
    model, directory = whisper
    report = scan(directory / "tf_model.h5")
    trainable_ids = {id(w) for w in model.trainable_weights}
    truth = {w.name[:-2]: id(w) in trainable_ids for w in model.weights}
    assert len(report.variables) == len(truth) == 50
    assert [(v.record.path, v.record.trainable) for v in report.variables] == list(truth.items())
    tables = [v for v in report.variables if v.record.path.endswith("embed_positions/weight")]
    assert sorted(v.record.shape for v in tables) == [(6, 8), (10, 8)]
    assert all(v.classification.kind is Kind.EMBEDDING and not v.decision.decay for v in tables)
    encoder = next(v for v in tables if "/encoder/" in v.record.path)
    assert encoder.record.trainable is False  # TFWhisperEncoder freezes it


def test_position_tables_are_recognised_by_role_not_by_one_name():
    for owner in ("embed_positions", "pos_table", "positional_encoding", "decoder_positions"):
        entry = hf_names.hf_weight_for(f"m/decoder/{owner}/weight", (10, 8))
        assert entry is not None and entry.kind is Kind.EMBEDDING, owner
    # The same names on something that is no (positions, width) table are not called one.
    assert hf_names.hf_weight_for("m/decoder/pos_table/weight", (3, 3, 8)).kind is Kind.KERNEL
    assert hf_names.hf_weight_for("m/decoder/compose/weight", (10, 8)).kind is Kind.KERNEL
    assert hf_names.hf_frozen_by_library("whisper", "m/model/decoder/embed_positions/weight") is None


def test_legacy_weights_file_says_trainability_unknown(tmp_path):
    """tf_keras ``save_weights("x.h5")``: the legacy layout, no model config, no trainability."""
    import tf_keras

    model = tf_keras.Sequential(
        [tf_keras.layers.Dense(3, input_shape=(4,), name="d1"), tf_keras.layers.BatchNormalization(name="bn")]
    )
    model.get_layer("d1").trainable = False
    model.save_weights(tmp_path / "legacy.h5")
    report = scan(tmp_path / "legacy.h5")
    assert report.loader == "weights-h5"
    known = {v.record.leaf: v.record.trainable_known for v in report.variables}
    assert known == {
        "kernel": False,
        "bias": False,
        "gamma": False,
        "beta": False,
        "moving_mean": True,
        "moving_variance": True,
    }
    assert all(UNKNOWN_TRAINABILITY in v.decision.reason for v in report.variables if not v.record.trainable_known)
    assert any("trainability of 4 variables unknown" in n for n in report.notes)


@keras.saving.register_keras_serializable("test_long_tail")
class ClassToken(L.Layer):
    """The Keras ViT example's token layer: its variable's name is not in a .keras file."""

    def build(self, input_shape):
        self.cls = self.add_weight(name="cls", shape=(1, 1, input_shape[-1]))

    def call(self, x):
        return keras.ops.concatenate([keras.ops.tile(self.cls, (keras.ops.shape(x)[0], 1, 1)), x], axis=1)


def test_a_token_layer_of_a_user_class_is_an_embedding_like_token(tmp_path):
    inputs = keras.Input((3, 8))
    model = keras.Model(inputs, ClassToken(name="class_token")(inputs))
    model.save(tmp_path / "token.keras")
    report = scan(tmp_path / "token.keras")
    (token,) = report.variables
    assert token.record.shape == (1, 1, 8) and not token.record.leaf_known
    assert token.classification.kind is Kind.EMBEDDING and not token.decision.decay
    assert any("ClassToken" in e and "learned-token" in e for e in token.classification.evidence)


def test_a_wrapper_missing_from_the_table_is_built_and_its_shared_variable_listed_once(wrapped):
    """The general path for a Keras class the table lacks (a newer Keras): building it from its
    config finds which of its variables belong to a sublayer, so SpectralNormalization read that
    way still lists its kernel once, as load_model does. A fresh interpreter: the scan's reader
    processes are forked from this one, and must not see the table change."""
    import subprocess
    import sys

    _, paths = wrapped
    code = (
        "import json, sys\n"
        "from decay_audit.knowledge import keras as table\n"
        "del table.LAYER_VARIABLES['SpectralNormalization']\n"
        "from decay_audit import scan\n"
        "report = scan(sys.argv[1])\n"
        "print(json.dumps({'notes': list(report.notes), "
        "'rows': [[v.record.path, v.record.trainable] for v in report.variables]}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(paths["keras"])], capture_output=True, text=True, timeout=300
    )
    document = json.loads(result.stdout)
    assert any("SpectralNormalization is not in decay-audit's table" in n for n in document["notes"])
    assert [tuple(row) for row in document["rows"]] == _truth(keras.saving.load_model(paths["keras"]))
