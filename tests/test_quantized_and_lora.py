"""Quantized (int8, int4, float8), LoRA and QLoRA core layers, read from their metadata exactly as
``keras.saving.load_model`` rebuilds them: the same variables, in ``model.weights`` order, with the
same trainability, shapes and dtypes; kinds follow the owning layer's role; and the emitted Keras
rule, applied to the loaded model, makes a real AdamW step decay exactly the intended variables."""

from __future__ import annotations

import keras
import pytest
from test_rules import apply_keras_rule, moved_by_real_optimizer

from decay_audit import scan
from decay_audit.kinds import Kind
from decay_audit.rules.keras3 import _owned_positions
from decay_audit.stages.rules import emit_rules

L = keras.layers

# The tests' own oracle for the role of every leaf these layers hold (not read from decay_audit).
ROLES = {
    "kernel": Kind.KERNEL,
    "lora_kernel_a": Kind.KERNEL,
    "lora_kernel_b": Kind.KERNEL,
    "reverse_embeddings": Kind.KERNEL,
    "bias": Kind.BIAS,
    "embeddings": Kind.EMBEDDING,
    "lora_embeddings_a": Kind.EMBEDDING,
    "lora_embeddings_b": Kind.EMBEDDING,
}
STATE_SUFFIXES = ("_scale", "_zero", "_amax_history", "g_idx")

# variant → (quantization mode or None, quantize config, LoRA: None | "config" | "enable" | "after")
VARIANTS = {
    "int8": ("int8", None, None),
    "int4": ("int4", None, None),
    "int4-per-channel": ("int4", "per-channel", None),
    "float8": ("float8", None, None),
    "lora-rank": (None, None, "config"),
    "enable-lora": (None, None, "enable"),
    "qlora-int8": ("int8", None, "after"),
    "qlora-int4": ("int4", None, "after"),
}


def _model(lora_rank=None):
    """Embedding, untied ReversibleEmbedding, EinsumDense and Dense: every quantizable core class.
    The ReversibleEmbedding gets no LoRA: Keras 3.15 cannot build an untied one with ``lora_rank``
    (Embedding.build locks the tracker before the reverse projection is added), so such a file
    would not load."""
    ids = keras.Input((3,), dtype="int32")
    reversible = L.ReversibleEmbedding(12, 8, tie_weights=False, name="rev")
    x = L.Add()([L.Embedding(12, 8, name="emb", lora_rank=lora_rank)(ids), reversible(ids)])
    x = L.EinsumDense("abc,cd->abd", output_shape=(3, 6), bias_axes="d", name="ein", lora_rank=lora_rank)(x)
    # Called forward only: a legacy .h5 cannot rebuild a ``reverse=True`` call (Keras 3.15).
    return keras.Model(ids, L.Dense(4, name="dense", lora_rank=lora_rank)(x))


def _build(variant):
    mode, config, lora = VARIANTS[variant]
    keras.utils.set_random_seed(0)
    model = _model(lora_rank=2 if lora == "config" else None)
    adapted = [layer for layer in model.layers if layer.weights and layer.name != "rev"]
    if lora == "enable":
        for layer in adapted:
            layer.enable_lora(2)
    if mode is not None:
        if config == "per-channel":
            model.quantize(mode, config=keras.quantizers.Int4QuantizationConfig(block_size=-1))
        else:
            model.quantize(mode)
    if lora == "after":
        for layer in adapted:
            layer.enable_lora(2)
    return model


@pytest.fixture(scope="session")
def saved(tmp_path_factory):
    """Every variant saved as .keras and legacy .h5 (float8's legacy .h5 is left out: Keras 3.15's
    own load_model cannot read it back), with what load_model makes of each file."""
    directory = tmp_path_factory.mktemp("quantized")
    files = {}
    for variant in VARIANTS:
        model = _build(variant)
        for suffix in (".keras", ".h5"):
            if variant == "float8" and suffix == ".h5":
                continue
            path = directory / f"{variant}{suffix}"
            model.save(path)
            files[(variant, suffix)] = path
    return files


def _loaded(path):
    return keras.saving.load_model(path)


def _expected_kind(leaf):
    if leaf.endswith(STATE_SUFFIXES):
        return Kind.STATISTIC
    return ROLES[leaf]


KERAS_CASES = [(v, ".keras") for v in VARIANTS]


@pytest.mark.parametrize("variant,suffix", KERAS_CASES, ids=[v for v, _ in KERAS_CASES])
def test_scan_lists_what_load_model_rebuilds(saved, variant, suffix):
    path = saved[(variant, suffix)]
    report = scan(path)
    model = _loaded(path)
    scanned = [(r.path, r.trainable, tuple(r.shape), r.dtype) for r in (v.record for v in report.variables)]
    truth = [(w.path, w.trainable, tuple(w.shape), keras.backend.standardize_dtype(w.dtype)) for w in model.weights]
    assert scanned == truth
    for variable in report.variables:
        assert variable.classification.kind is _expected_kind(variable.record.leaf), variable.record.path


@pytest.mark.parametrize("variant", ["int8", "int4", "qlora-int4"])
def test_quantized_tables_and_kernels_are_frozen_and_never_decayed(saved, variant):
    report = scan(saved[(variant, ".keras")], preset="kernels-only")
    by_path = {v.record.path: v for v in report.variables}
    for path in ("dense/kernel", "ein/kernel", "emb/embeddings", "rev/embeddings", "rev/reverse_embeddings"):
        assert by_path[path].record.dtype == "int8" and not by_path[path].record.trainable
        assert not by_path[path].decision.decay
    assert by_path["dense/bias"].record.trainable and not by_path["dense/bias"].decision.decay


def test_lora_factors_are_decayed_as_the_kernel_they_adapt(saved):
    report = scan(saved[("lora-rank", ".keras")], preset="kernels-only")
    decayed = {v.record.path for v in report.variables if v.decision.decay}
    adapters = {"ein/lora_kernel_a", "ein/lora_kernel_b", "dense/lora_kernel_a", "dense/lora_kernel_b"}
    assert decayed == adapters | {"rev/reverse_embeddings"}  # the untied output projection, no LoRA
    lora = next(v for v in report.variables if v.record.path == "emb/lora_embeddings_a")
    assert any("lookup table" in reason for reason in lora.classification.evidence)
    assert "not in the file" in lora.record.origin


@pytest.mark.parametrize("preset", ["kernels-only", "no-bias-norm", "ndim"])
def test_float8_scales_are_statistics_under_every_preset(saved, preset):
    report = scan(saved[("float8", ".keras")], preset=preset)
    scales = [v for v in report.variables if v.record.leaf.endswith(("_scale", "_amax_history"))]
    assert len(scales) == 12 and all(v.record.trainable for v in scales)
    assert all(v.classification.kind is Kind.STATISTIC and not v.decision.decay for v in scales)


@pytest.mark.parametrize("variant,suffix", KERAS_CASES, ids=[v for v, _ in KERAS_CASES])
def test_positions_count_model_weights_order(saved, variant, suffix):
    """``exclude_positions`` index a layer's variables as the snippet's ``owned`` lists do."""
    path = saved[(variant, suffix)]
    records = [v.record for v in scan(path).variables]
    owned: dict[str, list[str]] = {}
    for weight in _loaded(path).weights:
        owned.setdefault(weight.path.rpartition("/")[0], []).append(weight.path)
    place = _owned_positions(records)
    assert {r.path: place[id(r)] for r in records} == {
        p: (layer, i) for layer, paths in owned.items() for i, p in enumerate(paths)
    }


H5_CASES = [v for v in VARIANTS if v != "float8"]


@pytest.mark.parametrize("variant", H5_CASES)
def test_legacy_h5_names_every_variable(saved, variant):
    """Legacy .h5 files list their weight names trainable-first; the scan gives load_model's order
    and trainability (a quantized or LoRA-frozen kernel is not trainable)."""
    path = saved[(variant, ".h5")]
    report = scan(path)
    loaded = _loaded(path).weights
    assert [(v.record.path, v.record.trainable) for v in report.variables] == [(w.path, w.trainable) for w in loaded]
    for variable in report.variables:
        assert variable.classification.kind is _expected_kind(variable.record.leaf), variable.record.path


@pytest.mark.parametrize("preset", ["kernels-only", "no-bias-norm"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_emitted_rule_on_a_real_adamw_step(saved, variant, preset):
    path = saved[(variant, ".keras")]
    report = scan(path, preset=preset)
    emission = emit_rules(report, "keras")
    assert emission.ok, (emission.wrongly_selected, emission.unexpressible)
    model = _loaded(path)
    optimizer = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    apply_keras_rule(model, emission.document, optimizer)
    expected = {v.record.path for v in report.variables if v.decision.decay}
    assert [v for v in model.trainable_variables if not v.overwrite_with_gradient], "the probe sees variables"
    assert set(moved_by_real_optimizer(model, optimizer)) == expected


@pytest.mark.parametrize("variant", H5_CASES)
def test_legacy_order_restores_model_weights_order(saved, variant):
    """A legacy .h5 lists a layer's weights trainable first; ``legacy_order`` gives the order and
    trainability load_model gives, from the layer config the file holds."""
    import json

    import h5py

    from decay_audit.knowledge.keras import legacy_order

    path = saved[(variant, ".h5")]
    truth: dict[str, list[tuple[str, bool]]] = {}
    for weight in _loaded(path).weights:
        layer, _, leaf = weight.path.rpartition("/")
        truth.setdefault(layer, []).append((leaf, weight.trainable))
    with h5py.File(path, "r") as h5:
        entries = {e["config"]["name"]: e for e in json.loads(h5.attrs["model_config"])["config"]["layers"]}
        for layer, expected in truth.items():
            names = [
                n.decode() if isinstance(n, bytes) else n for n in h5["model_weights"][layer].attrs["weight_names"]
            ]
            leaves = [n.rpartition("/")[2] for n in names]
            entry = entries[layer]
            assert legacy_order(entry["class_name"], entry["config"], leaves) == tuple(expected), layer
