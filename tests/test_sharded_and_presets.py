"""Sharded checkpoints, keras_hub presets and LoRA adapters are each read as the one thing they are.

Every model is tiny and built here, saved by the library's own writer (Keras ``save_weights`` with
``max_shard_size``, keras_hub ``save_to_preset`` and ``save_lora_weights``, transformers
``save_pretrained``), and each scan is checked against the model the library itself loads back.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import run_cli

from decay_audit.errors import ModelLoadError
from decay_audit.kinds import Kind
from decay_audit.loaders import load
from decay_audit.loaders.discover import discover, single_model


def _shards(directory: Path, pattern: str) -> list[Path]:
    return sorted(directory.glob(pattern))


# -- Keras save_weights(max_shard_size=...) -------------------------------------------------------


@pytest.fixture(scope="session")
def keras_sharded(tmp_path_factory):
    """A functional model whose layer names do not sort in model order, saved sharded and whole."""
    import keras

    directory = tmp_path_factory.mktemp("keras_sharded")
    inputs = keras.Input((8,), name="features")
    x = keras.layers.Dense(16, name="zeta_proj")(inputs)
    x = keras.layers.BatchNormalization(name="mid_norm")(x)
    x = keras.layers.Dense(16, name="alpha_hidden")(x)
    x = keras.layers.LayerNormalization(name="beta_ln")(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    model = keras.Model(inputs, outputs, name="sharded_net")
    model.save_weights(directory / "net.weights.json", max_shard_size=0.000001)  # ~1 KB shards
    model.save_weights(directory / "whole.weights.h5")
    return model, directory


def test_keras_index_matches_the_live_model(keras_sharded):
    model, directory = keras_sharded
    shards = _shards(directory, "net_*.weights.h5")
    assert len(shards) >= 3
    inventory = load(directory / "net.weights.json")
    expected = [(w.path, tuple(w.shape), w.trainable) for w in model.weights]
    assert [(r.path, r.shape, r.trainable) for r in inventory] == expected  # count, paths, order, trainable
    assert {r.origin.split(":")[0] for r in inventory} == {s.name for s in shards}
    assert any("shards joined" in note for note in inventory.notes)


def test_keras_index_names_variables_as_the_unsharded_weights_file(keras_sharded):
    _, directory = keras_sharded
    sharded = load(directory / "net.weights.json")
    whole = load(directory / "whole.weights.h5")

    def rows(inventory):
        return sorted((r.path, r.leaf, r.layer, r.shape, r.dtype, r.trainable, r.class_hint) for r in inventory)

    assert rows(sharded) == rows(whole)
    assert (sharded.loader, whole.loader) == ("keras-sharded", "weights-h5")


def test_a_keras_shard_with_its_index_beside_it_is_read_as_the_whole_checkpoint(keras_sharded):
    model, directory = keras_sharded
    shard = _shards(directory, "net_*.weights.h5")[-1]
    inventory = load(shard)
    assert [r.path for r in inventory] == [w.path for w in model.weights]
    assert "one shard of" in inventory.notes[0] and "net.weights.json" in inventory.notes[0]


def test_a_keras_shard_alone_is_never_an_empty_model(keras_sharded, tmp_path):
    _, directory = keras_sharded
    for shard in _shards(directory, "net_*.weights.h5"):
        alone = tmp_path / shard.name
        shutil.copy(shard, alone)
        try:
            inventory = load(alone)
        except ModelLoadError as exc:
            assert "shard" in str(exc) and "net.weights.json" in str(exc)
        else:
            assert len(inventory) > 0
            assert any("net.weights.json" in note and "only part of the model" in note for note in inventory.notes)


def test_an_index_that_points_outside_its_directory_or_at_a_missing_shard_is_refused(tmp_path):
    (tmp_path / "evil.weights.json").write_text(json.dumps({"weight_map": {"/vars": "../elsewhere.weights.h5"}}))
    with pytest.raises(ModelLoadError, match="beside the index"):
        load(tmp_path / "evil.weights.json")
    (tmp_path / "gone.weights.json").write_text(json.dumps({"weight_map": {"/vars": "gone_00000.weights.h5"}}))
    with pytest.raises(ModelLoadError, match="gone_00000.weights.h5 listed in the index is missing"):
        load(tmp_path / "gone.weights.json")


# -- keras_hub presets ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def presets(tmp_path_factory):
    """A tiny BERT backbone and classifier, each saved as a preset whole and sharded, and a LoRA adapter."""
    import keras_hub

    directory = tmp_path_factory.mktemp("presets")
    models = keras_hub.models
    backbone = models.BertBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    task = models.BertTextClassifier(backbone, num_classes=3, preprocessor=None)
    task.save_to_preset(str(directory / "task"))
    task.save_to_preset(str(directory / "task_sharded"), max_shard_size=0.000002)  # ~2 KB shards
    backbone.save_to_preset(str(directory / "backbone"))
    backbone.save_to_preset(str(directory / "backbone_sharded"), max_shard_size=0.000002)
    # BART: model.weights lists the attributes its __init__ assigns, in that order, and that is not the
    # graph's (saved) order, so neither sorted keys nor header addresses give it; only the class does.
    bart = models.BartBackbone(
        vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16, max_sequence_length=16
    )
    bart.save_to_preset(str(directory / "bart"))
    bart.save_to_preset(str(directory / "bart_sharded"), max_shard_size=0.000002)
    # ResNet: its layers are built into locals, not attributes, so model.weights follows the graph,
    # which is the saved order: a sharded preset keeps it by numbering each shard's header addresses.
    resnet = models.ResNetBackbone(
        input_conv_filters=[64],  # keras_hub requires stackwise_num_filters to start at 64
        input_conv_kernel_sizes=[3],
        stackwise_num_filters=[64],
        stackwise_num_blocks=[1],
        stackwise_num_strides=[1],
        block_type="basic_block",
        image_shape=(16, 16, 3),
    )
    resnet.save_to_preset(str(directory / "resnet"))
    resnet.save_to_preset(str(directory / "resnet_sharded"), max_shard_size=0.0002)  # its 144 KB kernel fits one
    backbone.enable_lora(2)
    backbone.save_lora_weights(str(directory / "adapter.lora.h5"))
    adapted = [layer for layer in backbone._flatten_layers(include_self=False) if layer.weights]
    lora_shapes = sorted(
        tuple(v.shape)
        for i in backbone._lora_enabled_layers
        for v in (adapted[i].lora_kernel_a, adapted[i].lora_kernel_b)
    )
    return directory, keras_hub.__version__, lora_shapes


@pytest.mark.parametrize(
    "name", ["task", "task_sharded", "backbone", "backbone_sharded", "bart", "bart_sharded", "resnet", "resnet_sharded"]
)
def test_preset_paths_match_from_preset(presets, name):
    import keras_hub

    directory, version, _ = presets
    preset = directory / name
    if name.endswith("sharded"):
        assert len(_shards(preset, "model_*.weights.h5")) >= (2 if name.startswith("resnet") else 3)
    cls = keras_hub.models.TextClassifier if name.startswith("task") else keras_hub.models.Backbone
    loaded = cls.from_preset(str(preset))
    inventory = load(preset)
    assert len(inventory) == len(loaded.weights)
    assert [(r.path, r.shape, r.trainable) for r in inventory] == [
        (w.path, tuple(w.shape), w.trainable) for w in loaded.weights
    ]  # count, paths, order and trainability
    assert inventory.model_name == loaded.name
    assert f"keras_hub {version}" in inventory.notes[0]
    assert type(loaded).__name__ in inventory.notes[0]


def test_sharded_and_whole_presets_give_the_same_rows(presets):
    directory, _, _ = presets
    pairs = (
        ("task", "task_sharded"),
        ("backbone", "backbone_sharded"),
        ("bart", "bart_sharded"),
        ("resnet", "resnet_sharded"),
    )
    for whole, sharded in pairs:
        a, b = load(directory / whole), load(directory / sharded)
        assert [(r.path, r.shape, r.trainable, r.layer_class) for r in a] == [
            (r.path, r.shape, r.trainable, r.layer_class) for r in b
        ]


def test_a_preset_shard_is_read_as_its_preset(presets):
    directory, _, _ = presets
    preset = directory / "task_sharded"
    whole = load(preset)
    for path in (_shards(preset, "model_*.weights.h5")[1], preset / "model.weights.json"):
        inventory = load(path)
        assert [r.path for r in inventory] == [r.path for r in whole]
        assert "keras_hub preset" in inventory.notes[0]


def test_a_lora_adapter_scans_as_an_adapter(presets):
    import decay_audit

    directory, _, lora_shapes = presets
    report = decay_audit.scan(directory / "adapter.lora.h5")
    assert sorted(v.record.shape for v in report.variables) == lora_shapes
    assert {v.record.leaf for v in report.variables} == {"lora_kernel_a", "lora_kernel_b"}
    assert all(v.record.trainable for v in report.variables)
    assert {v.classification.kind for v in report.variables} == {Kind.KERNEL}
    assert any("adapter" in note and "not a model" in note for note in report.notes)


# -- Hugging Face save_pretrained(max_shard_size=...) ---------------------------------------------


@pytest.fixture(scope="session")
def hf_checkpoints(tmp_path_factory):
    from tf_keras_setups import tiny_bert_config
    from transformers import TFBertModel

    directory = tmp_path_factory.mktemp("hf")
    config = tiny_bert_config()
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(directory / "whole")
    model.save_pretrained(directory / "sharded", max_shard_size="2KB")
    return directory


def _rows(report):
    return {
        v.record.path: (
            v.record.shape,
            v.record.dtype,
            v.record.trainable,
            v.record.naming,
            v.classification.kind,
            v.decision.decay,
        )
        for v in report.variables
    }


def test_sharded_hf_checkpoint_has_the_unsharded_rows(hf_checkpoints):
    import decay_audit

    sharded_dir = hf_checkpoints / "sharded"
    assert len(_shards(sharded_dir, "tf_model-*-of-*.h5")) >= 3
    whole = decay_audit.scan(hf_checkpoints / "whole")
    for target in (sharded_dir, sharded_dir / "tf_model.h5.index.json", _shards(sharded_dir, "tf_model-*.h5")[0]):
        sharded = decay_audit.scan(target)
        assert len(sharded.variables) == len(whole.variables) > 0
        assert _rows(sharded) == _rows(whole)
        assert sharded.inventory.model_name == whole.inventory.model_name


def test_a_hf_shard_without_its_index_is_refused_in_one_line(hf_checkpoints, tmp_path):
    shard = _shards(hf_checkpoints / "sharded", "tf_model-*.h5")[1]
    named = tmp_path / shard.name
    renamed = tmp_path / "part.h5"
    shutil.copy(shard, named)
    shutil.copy(shard, renamed)
    for path in (named, renamed):
        result = run_cli("scan", str(path))
        assert result.returncode == 2, (result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr
        assert lines[0].startswith(f"decay-audit: error: {path}")
        assert "shard" in lines[0] and "tf_model.h5.index.json" in lines[0]
    with pytest.raises(ModelLoadError, match="shard 2 of"):
        load(named)


# -- discovery ------------------------------------------------------------------------------------


def test_a_directory_counts_each_checkpoint_and_preset_once(keras_sharded, presets, hf_checkpoints, tmp_path):
    _, keras_dir = keras_sharded
    preset_dir, _, _ = presets
    root = tmp_path / "registry"
    shutil.copytree(keras_dir, root / "keras")
    shutil.copytree(preset_dir / "task_sharded", root / "hub" / "task_sharded")
    shutil.copytree(preset_dir / "backbone", root / "hub" / "backbone")
    shutil.copytree(hf_checkpoints / "sharded", root / "hf")
    found = discover([root]).models
    assert [p.relative_to(root).as_posix() for p in found] == [
        "hf/tf_model.h5.index.json",
        "hub/backbone",
        "hub/task_sharded",
        "keras/net.weights.json",
        "keras/whole.weights.h5",
    ]
    every_shard = [str(p) for p in _shards(root / "hf", "*.h5")]
    assert discover(every_shard).models == (root / "hf" / "tf_model.h5.index.json",)
    assert single_model([root / "hub" / "task_sharded"]) == root / "hub" / "task_sharded"
    (root / "keras" / "whole.weights.h5").unlink()
    assert len(load(root / "keras")) == len(load(keras_dir / "net.weights.json"))  # index + shards: one model


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_shard_that_is_a_named_pipe_is_refused_without_waiting(tmp_path):
    os.mkfifo(tmp_path / "piped_00000.weights.h5")
    (tmp_path / "piped.weights.json").write_text(json.dumps({"weight_map": {"/vars": "piped_00000.weights.h5"}}))
    with pytest.raises(ModelLoadError, match="piped_00000.weights.h5 listed in the index is missing"):
        load(tmp_path / "piped.weights.json")
    assert discover([tmp_path]).models == (tmp_path / "piped.weights.json",)


def test_an_unzipped_keras_model_directory_is_read_as_load_model_rebuilds_it(tmp_path):
    """Keras' ``save_model(..., zipped=False)`` writes a preset's layout: config.json, model.weights.h5."""
    import keras

    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization(name="norm")(keras.layers.Dense(3, name="proj")(inputs))
    model = keras.Model(inputs, outputs)
    keras.saving.save_model(model, tmp_path / "unzipped", zipped=False)
    inventory = load(tmp_path / "unzipped")
    assert [(r.path, r.trainable) for r in inventory] == [(w.path, w.trainable) for w in model.weights]
    assert "keras.saving.load_model" in inventory.notes[0]
