"""keras_hub backbones after fine-tuning steps: quantized (int8, int4, float8) and LoRA-adapted,
saved in every format keras_hub and Keras write, each scan checked against the model Keras or
keras_hub loads back from the same file.

keras_hub creates its Dense/EinsumDense/Embedding layers in code, so ``config.json`` holds no
config for them; a quantized backbone saves its dtype policy as one ``DTypePolicyMap`` keyed by
layer path, which is what ``load_model`` uses to rebuild each layer quantized. Rows are compared in
order: across layers the scan follows keras_hub's tracking order (from the generated table), within
a layer ``model.weights`` order, which is what ``rules --target keras`` positions count.
"""

from __future__ import annotations

import pytest

keras = pytest.importorskip("keras")
keras_hub = pytest.importorskip("keras_hub")

from test_rules import apply_keras_rule, moved_by_real_optimizer  # noqa: E402

from decay_audit import scan  # noqa: E402
from decay_audit.kinds import Kind  # noqa: E402
from decay_audit.loaders import load  # noqa: E402
from decay_audit.stages.rules import emit_rules  # noqa: E402

STATE_SUFFIXES = ("_scale", "_zero", "_amax_history", "g_idx")
"""Leaves quantization adds: scales, zero points, group indices, float8 amax histories (the
RMS norms' ``scale`` is a whole leaf, not a suffix, and stays a norm)."""


def _llama():
    return keras_hub.models.LlamaBackbone(
        vocabulary_size=64, num_layers=1, num_query_heads=2, num_key_value_heads=1, hidden_dim=16, intermediate_dim=32
    )


def _gemma():
    return keras_hub.models.GemmaBackbone(
        vocabulary_size=64,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=16,
        intermediate_dim=32,
        head_dim=8,
    )


BACKBONES = {"llama": _llama, "gemma": _gemma}
MODES = ("int8", "int4", "float8")
QUANTIZED = [(b, m) for b in BACKBONES for m in MODES]


def _scanned(report):
    return [(v.record.path, v.record.trainable, tuple(v.record.shape), v.record.dtype) for v in report.variables]


def _truth(model):
    return [(w.path, w.trainable, tuple(w.shape), keras.backend.standardize_dtype(w.dtype)) for w in model.weights]


def _assert_same_variables(report, model):
    """Count, paths, trainability, shapes and dtypes equal, in model.weights order."""
    scanned, truth = _scanned(report), _truth(model)
    assert len(scanned) == len(truth)
    assert sorted(scanned) == sorted(truth)  # the same rows (a readable diff when they are not) ...
    assert scanned == truth  # ... in the same order


# -- quantized backbones ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def quantized(tmp_path_factory):
    """Each backbone quantized in each mode, saved as .keras; int8 also saved as a preset (keras_hub
    0.32's from_preset cannot load a quantized preset back, so its truth is the .keras file's)."""
    directory = tmp_path_factory.mktemp("hub_quantized")
    files = {}
    for backbone, mode in QUANTIZED:
        keras.utils.set_random_seed(0)
        model = BACKBONES[backbone]()
        model.quantize(mode)
        path = directory / f"{backbone}-{mode}.keras"
        model.save(path)
        model.save_weights(directory / f"{backbone}-{mode}.weights.h5")
        files[(backbone, mode)] = path
        if mode == "int8":
            model.save_to_preset(str(directory / f"{backbone}-{mode}-preset"))
    return directory, files


@pytest.mark.parametrize("backbone,mode", QUANTIZED, ids=[f"{b}-{m}" for b, m in QUANTIZED])
def test_quantized_backbone_scans_as_load_model_rebuilds_it(quantized, backbone, mode):
    _, files = quantized
    report = scan(files[(backbone, mode)])
    _assert_same_variables(report, keras.saving.load_model(files[(backbone, mode)]))
    for variable in report.variables:
        record, kind = variable.record, variable.classification.kind
        if record.leaf.endswith(STATE_SUFFIXES):
            assert kind is Kind.STATISTIC and not variable.decision.decay, record.path
        if record.dtype == "int8" and record.leaf in ("kernel", "embeddings", "reverse_embeddings"):
            assert not record.trainable and not variable.decision.decay, record.path
    assert not any(v.record.leaf.startswith("var_") for v in report.variables)


def test_a_tied_gemma_embedding_keeps_its_scale_and_attention_has_no_bias(quantized):
    """The two misreadings seen on a real quantized Gemma: a tied table's scale taken for an
    untied output projection, an EinsumDense's scale for its bias."""
    _, files = quantized
    by_path = {v.record.path: v for v in scan(files[("gemma", "int8")]).variables}
    scale = by_path["token_embedding/embeddings_scale"]
    assert scale.classification.kind is Kind.STATISTIC and not scale.decision.decay
    assert "token_embedding/reverse_embeddings" not in by_path
    query_scale = by_path["decoder_block_0/attention/query/kernel_scale"]
    assert query_scale.classification.kind is Kind.STATISTIC and not query_scale.decision.decay
    assert not any(path.endswith("/bias") for path in by_path)


def test_float8_delayed_scaling_state_is_trainable_but_never_decayed(quantized):
    _, files = quantized
    report = scan(files[("llama", "float8")], preset="no-bias-norm")
    state = [v for v in report.variables if v.record.leaf.endswith(("_scale", "_amax_history"))]
    assert len(state) == 7 * 6  # q, k, v, output, three feed-forward projections; six each
    assert all(v.record.trainable and not v.decision.decay for v in state)


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_a_quantized_preset_reads_as_its_keras_file(quantized, backbone):
    directory, files = quantized
    preset = scan(directory / f"{backbone}-int8-preset")
    whole = scan(files[(backbone, "int8")])
    assert _scanned(preset) == _scanned(whole)
    assert [v.classification.kind for v in preset.variables] == [v.classification.kind for v in whole.variables]


WEIGHTS_ONLY = [case for case in QUANTIZED if case != ("llama", "int8")]


@pytest.mark.parametrize("backbone,mode", WEIGHTS_ONLY, ids=[f"{b}-{m}" for b, m in WEIGHTS_ONLY])
def test_a_quantized_weights_file_is_read_from_what_it_stores(quantized, backbone, mode):
    """No config, so no policy map: an int8 kernel or table stored first, or six float8 scale and
    amax-history variables, say the mode. Truth is the quantized model the file loads into (its
    in-memory order after quantize() differs from load_model's for float8, so rows are compared as
    sets; the scan keeps load_model's order, as for the .keras file)."""
    directory, _ = quantized
    report = scan(directory / f"{backbone}-{mode}.weights.h5")
    model = BACKBONES[backbone]()
    model.quantize(mode)
    model.load_weights(directory / f"{backbone}-{mode}.weights.h5")
    assert sorted(_scanned(report)) == sorted(_truth(model))
    for variable in report.variables:
        if variable.record.leaf.endswith(STATE_SUFFIXES):
            assert variable.classification.kind is Kind.STATISTIC and not variable.decision.decay
    assert not any(v.record.leaf.startswith("var_") for v in report.variables)


def test_an_untied_int8_table_in_a_weights_file_keeps_its_positions(quantized):
    """An untied int8 table stores int8, float, int8, float, as a tied grouped-int4 one does: without
    the policy map nothing says which, so that layer keeps positional names; the rest are named."""
    directory, _ = quantized
    report = scan(directory / "llama-int8.weights.h5")
    positional = {v.record.path.rpartition("/")[0] for v in report.variables if v.record.leaf.startswith("var_")}
    assert positional == {"token_embedding"}
    assert {v.record.leaf for v in report.variables if v.record.layer_class == "EinsumDense"} == {
        "kernel",
        "kernel_scale",
    }


def test_a_quantized_task_reads_its_backbones_policy_map(tmp_path):
    """A CausalLM quantized whole: the map sits in the nested backbone's config, keyed by the same
    layer paths (keras_hub backbones open no name scope of their own)."""
    keras.utils.set_random_seed(0)
    task = keras_hub.models.LlamaCausalLM(backbone=_llama(), preprocessor=None)
    task.quantize("int4")
    task.save(tmp_path / "task.keras")
    _assert_same_variables(scan(tmp_path / "task.keras"), keras.saving.load_model(tmp_path / "task.keras"))


@pytest.mark.parametrize("preset", ["kernels-only", "no-bias-norm"])
@pytest.mark.parametrize("backbone,mode", QUANTIZED, ids=[f"{b}-{m}" for b, m in QUANTIZED])
def test_emitted_keras_rule_on_a_real_adamw_step(quantized, backbone, mode, preset):
    _, files = quantized
    path = files[(backbone, mode)]
    report = scan(path, preset=preset)
    emission = emit_rules(report, "keras")
    assert emission.ok, (emission.wrongly_selected, emission.unexpressible)
    model = keras.saving.load_model(path)
    optimizer = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    apply_keras_rule(model, emission.document, optimizer)
    expected = {v.record.path for v in report.variables if v.decision.decay}
    assert model.trainable_variables, "the probe sees variables (quantized kernels are frozen, norms are not)"
    assert bool(expected) == (mode == "float8")  # int8/int4 kernels are frozen: nothing left to decay
    assert set(moved_by_real_optimizer(model, optimizer)) == expected


# -- LoRA-adapted backbones ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora(tmp_path_factory):
    """A Gemma backbone after enable_lora(2), and a GemmaCausalLM whose backbone had it, each saved in
    every format keras_hub and Keras write (LoRA factors are merged on save and not restored)."""
    directory = tmp_path_factory.mktemp("hub_lora")
    keras.utils.set_random_seed(0)
    backbone = _gemma()
    backbone.enable_lora(2)
    keras.utils.set_random_seed(0)
    task = keras_hub.models.GemmaCausalLM(backbone=_gemma(), preprocessor=None)
    task.backbone.enable_lora(2)
    for name, model in (("backbone", backbone), ("task", task)):
        model.save(directory / f"{name}.keras")
        model.save_weights(directory / f"{name}.weights.h5")
        model.save_to_preset(str(directory / f"{name}_preset"))
        # ~5 KB shards: the 4 KB embedding table fits one
        model.save_to_preset(str(directory / f"{name}_sharded"), max_shard_size=0.000005)
    backbone.save_lora_weights(str(directory / "backbone.lora.h5"))
    factors = sorted((w.name, tuple(w.shape)) for w in backbone.weights if w.name in ("lora_kernel_a", "lora_kernel_b"))
    return directory, factors


def _loaded(directory, target):
    """What Keras or keras_hub rebuilds from ``target``; a weights file, loaded into a fresh model."""
    if target.endswith(".keras"):
        return keras.saving.load_model(directory / target)
    task = target.startswith("task")
    if target.endswith(".weights.h5"):
        fresh = keras_hub.models.GemmaCausalLM(backbone=_gemma(), preprocessor=None) if task else _gemma()
        fresh.load_weights(directory / target)
        return fresh
    loader = keras_hub.models.CausalLM if task else keras_hub.models.Backbone
    return loader.from_preset(str(directory / target.split("/")[0]))


LORA_TARGETS = [
    f"{name}{suffix}"
    for name in ("backbone", "task")
    for suffix in (".keras", ".weights.h5", "_preset", "_sharded", "_sharded/model.weights.json")
]


@pytest.mark.parametrize("target", LORA_TARGETS)
def test_lora_model_scans_as_keras_rebuilds_it(lora, target):
    directory, _ = lora
    report = scan(directory / target)
    model = _loaded(directory, target)
    _assert_same_variables(report, model)
    assert not any("lora" in v.record.leaf for v in report.variables)  # merged into the kernels on save
    kinds = {v.record.leaf: v.classification.kind for v in report.variables}
    assert kinds == {"kernel": Kind.KERNEL, "embeddings": Kind.EMBEDDING, "scale": Kind.NORM}


@pytest.mark.parametrize("name", ["backbone", "task"])
def test_a_sharded_lora_preset_has_the_rows_of_the_whole_one(lora, name):
    directory, _ = lora
    assert len(list((directory / f"{name}_sharded").glob("model_*.weights.h5"))) >= 2
    assert _scanned(scan(directory / f"{name}_sharded")) == _scanned(scan(directory / f"{name}_preset"))


def test_a_lora_adapter_lists_every_factor_the_backbone_trains(lora):
    directory, factors = lora
    report = scan(directory / "backbone.lora.h5")
    assert sorted((v.record.leaf, tuple(v.record.shape)) for v in report.variables) == factors
    assert all(v.record.trainable and v.classification.kind is Kind.KERNEL for v in report.variables)
    assert load(directory / "backbone.lora.h5").loader == "lora-adapter"


# -- what a scan imports and prints, fast -----------------------------------------------------------


def test_the_cli_starts_without_the_rule_targets_or_tabulate():
    """A scan forks its reader after the CLI module is imported: everything imported before that
    delays the read (the rule targets and the report records cost 30 ms, tabulate 30 ms)."""
    import subprocess
    import sys

    code = (
        "import sys, decay_audit.cli; print(sorted(m for m in ('decay_audit.rules', 'tabulate') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


TABLE_ROWS = [
    ("dense (Dense)", "dense/kernel", "(4, 2)", "kernel", "yes", "high", "Keras class Dense: `kernel` is its kernel"),
    ("", "dense/bias", "(2)", "bias", "no", "high", ""),
    ("  padded  ", "1.5", "True", "nan", "1,000", "-3", "  "),
    ("", "", "", "", "", "", ""),
]


@pytest.mark.parametrize("count", [1, 2, 4])
def test_the_plain_table_is_tabulates_simple_style_byte_for_byte(count):
    from tabulate import tabulate

    from decay_audit.report.table import _HEADERS, _simple_table

    rows = TABLE_ROWS[:count]
    assert _simple_table(rows, _HEADERS) == tabulate(rows, headers=_HEADERS, tablefmt="simple", disable_numparse=True)
    counts = [("kernel", "14", "960", "14"), ("total", "25", "2,160", "14")][:count]
    headers = ("kind", "variables", "parameters", "decayed")
    assert _simple_table(counts, headers, (False, True, True, True)) == tabulate(
        counts, headers=headers, tablefmt="simple", colalign=("left", "right", "right", "right")
    )


def test_the_plain_table_leaves_wide_characters_and_empty_tables_to_tabulate():
    from decay_audit.report.table import _HEADERS, _simple_table

    assert _simple_table([], _HEADERS) is None
    assert _simple_table([("层", "", "", "", "", "", "")], _HEADERS) is None
    assert _simple_table([("a\tb", "", "", "", "", "", "")], _HEADERS) is None
