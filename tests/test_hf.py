"""Hugging Face TF checkpoints (transformers 4.x, random weights, tiny configs): ``save_pretrained``
directories and bare ``tf_model.h5`` files scan to exactly the TF model's variables, by the names
``model.weights`` gives them, each judged by the role its owning layer gives it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from conftest import KERAS_ROLES

from decay_audit import load, scan
from decay_audit.kinds import Kind
from decay_audit.knowledge import transformers as hf_names

transformers = pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import hf_add_weights  # noqa: E402

# Roles of the variables HF layer classes create themselves, read from transformers 4.49's
# modeling_tf_*.py by hand (independent of decay_audit.knowledge.transformers, which the scan uses).
HF_CLASS_ROLES = {
    ("TFBertEmbeddings", "weight"): Kind.EMBEDDING,
    ("TFBertEmbeddings", "embeddings"): Kind.EMBEDDING,  # token_type / position tables by name_scope
    ("TFRobertaEmbeddings", "weight"): Kind.EMBEDDING,
    ("TFRobertaEmbeddings", "embeddings"): Kind.EMBEDDING,
    ("TFRobertaLMHead", "bias"): Kind.BIAS,  # output bias over the vocabulary
    ("TFEmbeddings", "embeddings"): Kind.EMBEDDING,
    ("TFCLIPTextEmbeddings", "embeddings"): Kind.EMBEDDING,  # position_embedding name_scope
    ("TFCLIPVisionEmbeddings", "embeddings"): Kind.EMBEDDING,
    ("TFT5Attention", "embeddings"): Kind.EMBEDDING,  # relative_attention_bias: rows per distance bucket
    ("TFEmbeddings", "weight"): Kind.EMBEDDING,  # DistilBERT
    ("TFConv1D", "weight"): Kind.KERNEL,
    ("TFConv1D", "bias"): Kind.BIAS,
    ("TFT5LayerNorm", "weight"): Kind.NORM,
    ("TFCLIPTextEmbeddings", "weight"): Kind.EMBEDDING,
    ("TFCLIPVisionEmbeddings", "class_embedding"): Kind.EMBEDDING,
    ("TFCLIPMainLayer", "logit_scale"): Kind.SCALE,
    ("TFWhisperPositionalEmbedding", "weight"): Kind.EMBEDDING,
    ("TFSharedEmbeddings", "weight"): Kind.EMBEDDING,
    ("TFViTEmbeddings", "cls_token"): Kind.EMBEDDING,
    ("TFViTEmbeddings", "position_embeddings"): Kind.EMBEDDING,
}


def _models():
    t = transformers
    ids = [[1, 2, 3, 4, 5]]
    tiny = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    return {
        "bert": (lambda: t.TFBertModel(t.BertConfig(vocab_size=50, **tiny)), {"input_ids": ids}),
        "roberta": (lambda: t.TFRobertaForMaskedLM(t.RobertaConfig(vocab_size=50, **tiny)), {"input_ids": ids}),
        "distilbert": (
            lambda: t.TFDistilBertModel(
                t.DistilBertConfig(vocab_size=50, dim=16, n_layers=1, n_heads=2, hidden_dim=32)
            ),
            {"input_ids": ids},
        ),
        "gpt2": (
            lambda: t.TFGPT2LMHeadModel(t.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=32)),
            {"input_ids": ids},
        ),
        "t5": (
            lambda: t.TFT5ForConditionalGeneration(
                t.T5Config(vocab_size=50, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
            ),
            {"input_ids": ids, "decoder_input_ids": ids},
        ),
        "clip": (
            lambda: t.TFCLIPModel(
                t.CLIPConfig(
                    text_config=dict(vocab_size=50, **tiny, max_position_embeddings=16),
                    vision_config=dict(**tiny, image_size=8, patch_size=4),
                    projection_dim=8,
                )
            ),
            {"input_ids": ids, "pixel_values": [[[[0.0] * 8] * 8] * 3]},
        ),
        "vit": (
            lambda: t.TFViTModel(t.ViTConfig(**tiny, image_size=8, patch_size=4)),
            {"pixel_values": [[[[0.0] * 8] * 8] * 3]},
        ),
        "whisper": (
            lambda: t.TFWhisperModel(
                t.WhisperConfig(
                    vocab_size=50,
                    num_mel_bins=4,
                    encoder_layers=1,
                    decoder_layers=1,
                    encoder_attention_heads=2,
                    decoder_attention_heads=2,
                    d_model=16,
                    encoder_ffn_dim=32,
                    decoder_ffn_dim=32,
                    max_source_positions=4,
                    max_target_positions=8,
                )
            ),
            {"input_features": [[[0.0] * 8] * 4], "decoder_input_ids": [[1, 2]]},
        ),
    }


def _owner_roles(model) -> dict[str, Kind]:
    """Expected kind of every variable, from the class of the layer that directly owns it."""
    import tensorflow as tf

    keras_modules = ("tf_keras.", "keras.")
    roles: dict[str, Kind] = {}
    for layer in [model, *model.submodules]:
        if not isinstance(layer, tf.Module) or not hasattr(layer, "_trainable_weights"):
            continue
        cls = type(layer)
        builtin = cls.__module__.startswith(keras_modules)
        for weight in list(layer._trainable_weights) + list(layer._non_trainable_weights):
            name = weight.name[:-2]
            leaf = name.rsplit("/", 1)[-1]
            if builtin:
                roles[name] = KERAS_ROLES[leaf]
            else:
                key = next(((c.__name__, leaf) for c in cls.__mro__ if (c.__name__, leaf) in HF_CLASS_ROLES), None)
                roles[name] = HF_CLASS_ROLES[key] if key else f"{cls.__name__}.{leaf}"
    return roles


@pytest.fixture(scope="module")
def hf_checkpoints(tmp_path_factory):
    import tensorflow as tf

    built = {}
    for name, (make, inputs) in _models().items():
        model = make()
        model({k: tf.constant(v) for k, v in inputs.items()})
        directory = tmp_path_factory.mktemp(f"hf_{name}")
        model.save_pretrained(str(directory))
        built[name] = (model, directory, _owner_roles(model))
    unknown = sorted({r for _, _, roles in built.values() for r in roles.values() if not isinstance(r, Kind)})
    assert not unknown, f"no expected role for {unknown}"
    return built


MODELS = ["bert", "roberta", "distilbert", "gpt2", "t5", "clip", "vit", "whisper"]


@pytest.mark.parametrize("name", MODELS)
def test_save_pretrained_directory_scans_to_the_models_variables(hf_checkpoints, name):
    model, directory, roles = hf_checkpoints[name]
    report = scan(directory)  # a directory with tf_model.h5 + config.json is one model
    names = [w.name[:-2] for w in model.weights]
    paths = [v.record.path for v in report.variables]
    assert len(paths) == len(set(paths)) == len(set(names)) == len(model.weights)
    assert set(paths) == set(names)
    kinds = {v.record.path: v.classification.kind for v in report.variables}
    wrong = {p: (kinds[p].value, roles[p].value) for p in names if kinds[p] is not roles[p]}
    assert not wrong
    # What an optimizer trains: model.trainable_weights (Whisper's encoder freezes its position
    # table's layer, whose tf.Variable keeps trainable=True).
    trained = {id(w) for w in model.trainable_weights}
    trainable = {w.name[:-2]: id(w) in trained for w in model.weights}
    assert all(v.record.trainable == trainable[v.record.path] for v in report.variables)
    assert any("Hugging Face" in n for n in report.inventory.notes)
    assert all(
        any(e.startswith("Hugging Face checkpoint (config.json model_type") for e in v.classification.evidence)
        for v in report.variables
    )


def test_bare_tf_model_h5_is_recognised_by_hf_naming(hf_checkpoints, tmp_path):
    _, directory, roles = hf_checkpoints["bert"]
    lonely = tmp_path / "tf_model.h5"
    lonely.write_bytes((directory / "tf_model.h5").read_bytes())
    report = scan(lonely)
    kinds = {v.record.path: v.classification.kind for v in report.variables}
    assert kinds == roles
    assert kinds["tf_bert_model/bert/embeddings/word_embeddings/weight"] is Kind.EMBEDDING
    assert any("without config.json" in n for n in report.inventory.notes)


def test_t5_tied_embedding_is_listed_once(hf_checkpoints):
    model, directory, _ = hf_checkpoints["t5"]
    import h5py

    with h5py.File(directory / "tf_model.h5", "r") as h5:
        listed = [n for g in h5.attrs["layer_names"] for n in h5[g].attrs["weight_names"]]
    assert sum(n == "shared/shared/embeddings:0" for n in listed) == 3  # saved once per user layer
    inventory = load(directory / "tf_model.h5")
    assert [r.path for r in inventory.records].count("shared/shared/embeddings") == 1
    assert len(inventory.records) == len(model.weights)
    assert any("listed once" in n for n in inventory.notes)


def test_newer_transformers_checkpoint_scans_with_lower_confidence(hf_checkpoints, tmp_path):
    _, directory, roles = hf_checkpoints["bert"]
    (tmp_path / "tf_model.h5").write_bytes((directory / "tf_model.h5").read_bytes())
    config = json.loads((directory / "config.json").read_text())
    config["transformers_version"] = "4.99.0"
    (tmp_path / "config.json").write_text(json.dumps(config))
    report = scan(tmp_path)
    assert any("newer than" in n for n in report.inventory.notes)
    kinds = {v.record.path: v.classification.kind for v in report.variables}
    assert kinds == roles  # leaf conventions still carry it


def test_directory_with_pytorch_weights_beside_is_still_one_model(hf_checkpoints, tmp_path):
    _, directory, _ = hf_checkpoints["gpt2"]
    for child in directory.iterdir():
        (tmp_path / child.name).write_bytes(child.read_bytes())
    (tmp_path / "pytorch_model.bin").write_bytes(b"PK\x05\x06" + bytes(18))  # a zip, as torch.save writes
    assert len(load(tmp_path).records) == 16


def test_table_covers_every_add_weight_of_the_installed_transformers():
    """Regenerates the list from transformers' source; a version that adds a weight fails here."""
    dynamic = {
        "name",
        "f'point_embed_._{i}.weight'",
        "old_embeddings.name.split(':')[0]",
        "old_lm_head_decoder.name.split(':')[0]",
        "weight.name.split(':')[0]",
    }
    missing = []
    calls = hf_add_weights.add_weight_calls(hf_add_weights.transformers_dir())
    assert len(calls) > 200
    for module, cls, scope, name in calls:
        if name in dynamic:
            continue
        path = f"{scope or 'owner'}/{name}"
        if hf_names.hf_weight_for(path, (4, 4)) is None:
            missing.append((module, cls, scope, name))
    # On a transformers other than hf_names.TRANSFORMERS_VERSION this still holds the table to every
    # add_weight of the installed release; a new name fails here until the table gives it a role.
    assert not missing, f"transformers {transformers.__version__}: no role in hf_names for {missing}"


def test_hf_table_entries_pin_the_roles_that_matter():
    assert hf_names.hf_weight_for("m/bert/embeddings/word_embeddings/weight", (50, 16)).kind is Kind.EMBEDDING
    assert hf_names.hf_weight_for("m/transformer/h_._0/attn/c_attn/weight", (16, 48)).kind is Kind.KERNEL
    assert hf_names.hf_weight_for("m/encoder/block_._0/layer_._0/layer_norm/weight", (16,)).kind is Kind.NORM
    assert hf_names.hf_weight_for("m/decoder/embed_positions/weight", (8, 16)).kind is Kind.EMBEDDING
    assert hf_names.hf_weight_for("m/text_model/embeddings/token_embedding/weight", (50, 16)).kind is Kind.EMBEDDING
    assert hf_names.hf_weight_for("m/swin/encoder/attention/self/relative_position_index", (4, 4)).trainable is False
    assert hf_names.version_is_checked("4.49.0") and hf_names.version_is_checked("4.30.2")
    assert not hf_names.version_is_checked("4.50.0") and not hf_names.version_is_checked("5.0.0")


def test_hostile_or_broken_config_beside_the_weights(hf_checkpoints, tmp_path):
    _, directory, roles = hf_checkpoints["bert"]
    (tmp_path / "tf_model.h5").write_bytes((directory / "tf_model.h5").read_bytes())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "x" * 100_000, "architectures": [7, "A" * 500]}))
    report = scan(tmp_path)
    assert all(len(v.classification.evidence[0]) < 1000 for v in report.variables)
    (tmp_path / "config.json").write_text("{not json")
    report = scan(tmp_path)  # read as a bare HF checkpoint: the weights still name themselves
    assert {v.record.path: v.classification.kind for v in report.variables} == roles
