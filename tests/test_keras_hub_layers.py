"""Pins decay_audit/knowledge/_generated/keras_hub_layers.py to the installed keras_hub: regenerating it from the
installed source must give the committed file, so a keras_hub upgrade that adds, renames or
reorders a variable turns CI red (run tools/generate_keras_hub_table.py, review the kinds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

keras_hub = pytest.importorskip("keras_hub")

from decay_audit.knowledge import keras_hub as hub_table  # noqa: E402
from decay_audit.knowledge._generated.keras_hub_layers import CLASSES, KERAS_HUB_VERSION  # noqa: E402  (the data itself)

TOOL = Path(__file__).resolve().parents[1] / "tools" / "generate_keras_hub_table.py"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_keras_hub_table", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_table_is_generated_from_the_installed_keras_hub():
    assert KERAS_HUB_VERSION == keras_hub.__version__
    generator = _generator()
    table = generator.build_table()
    assert generator.render(table) == generator.OUT.read_text()
    assert generator.render_roles(table) == generator.ROLES_OUT.read_text()


def test_every_table_class_exists_with_its_variables():
    """Each table row names a real class; each named own variable appears in its source."""
    import importlib
    import inspect

    for class_id, row in CLASSES.items():
        module_name, _, name = class_id.rpartition(".")
        cls = getattr(importlib.import_module(module_name), name)
        source = "".join(inspect.getsource(k) for k in cls.__mro__ if k.__module__.startswith("keras_hub"))
        for leaf, *_ in row[4]:
            assert not leaf or f'"{leaf}"' in source, (class_id, leaf)


def test_kinds_of_tables_known_to_be_lookups_or_biases():
    """The reviewed decisions the issue asks for, read back through the look-up the classifier uses."""
    expect = {
        ("PositionEmbedding", "embeddings"): "embedding",
        ("T5MultiHeadAttention", "embeddings"): "embedding",
        ("WindowAttention", "relative_position_bias_table"): "embedding",
        ("XLNetEncoder", "content_attention_bias"): "bias",
        ("XLNetEncoder", "segment_encoding"): "embedding",
        ("LlamaLayerNorm", "scale"): "norm",
        ("CLIPHead", "logit_scale"): "scale",
    }
    for (class_name, leaf), kind in expect.items():
        slot = hub_table.slot_for_hub_leaf(class_name, leaf)
        assert slot is not None and slot.kind.value == kind, (class_name, leaf, slot)


def test_unreviewed_variable_stops_the_generator():
    generator = _generator()
    generator.MISSING.clear()
    assert generator._reviewed_kind("SomeNewLayer", "mystery_weight", True)[1] == "unreviewed"
    assert generator.MISSING == ["SomeNewLayer.mystery_weight"]
    generator.MISSING.clear()
