"""keras_hub backbones and task models (tiny, random weights): every variable found once, named as
Keras names it, in ``model.weights`` order, and classified by its owning layer's role, in `.keras`
and `.weights.h5`."""

from __future__ import annotations

import collections

import hub_zoo
import keras
import pytest

from decay_audit import scan
from decay_audit.kinds import Confidence

keras_hub = pytest.importorskip("keras_hub")
pytestmark = pytest.mark.slow  # builds and saves every zoo model: about a minute on two cores


@pytest.fixture(scope="session")
def hub_files(tmp_path_factory):
    """Every zoo model built and saved once: name -> (live model, .keras path, .weights.h5 path)."""
    directory = tmp_path_factory.mktemp("hub_zoo")
    saved = {}
    for name in hub_zoo.ALL:
        # Keras numbers unnamed layers by a process-wide counter (t5_layer_norm_3): start each model
        # afresh, as a user's process does, so the names saved are the names load_model gives.
        keras.backend.clear_session()
        model = hub_zoo.build(name)
        keras_path = directory / f"{name}.keras"
        weights_path = directory / f"{name}.weights.h5"
        model.save(keras_path)
        model.save_weights(weights_path)
        saved[name] = (model, keras_path, weights_path)
    return saved


_REPORTS: dict = {}


def _report(path):
    """One scan per file for the whole session (each scan reads the file in a child process)."""
    if path not in _REPORTS:
        _REPORTS[path] = scan(path, preset="no-bias-norm")
    return _REPORTS[path]


def _owners(model) -> dict[int, keras.layers.Layer]:
    owners = {}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        for variable in layer._trainable_variables + layer._non_trainable_variables:
            owners.setdefault(id(variable), layer)
    return owners


# Roles restated from each layer's call(), independently of decay-audit's table: (class, leaf) -> kind.
_SPECIAL = {
    ("T5MultiHeadAttention", "embeddings"): "embedding",  # relative-position bias, looked up by bucket
    ("ViTPatchingAndEmbedding", "class_token"): "embedding",
    ("CLIPVisionEmbedding", "class_embedding"): "embedding",
    ("CLIPHead", "logit_scale"): "scale",
    ("XLNetEncoder", "content_attention_bias"): "bias",  # added to the query, r_w_bias
    ("XLNetEncoder", "positional_attention_bias"): "bias",
    ("XLNetEncoder", "segment_attention_bias"): "bias",
    ("XLNetEncoder", "segment_encoding"): "embedding",  # selected by segment ids
    ("XLNetAttentionMaskLayer", "mask_emb"): "embedding",
    ("RelativeEmbedding", "rel_embedding"): "embedding",
    ("ReversibleEmbedding", "reverse_embeddings"): "kernel",  # multiplies hidden states into logits
    ("WindowAttention", "relative_position_bias_table"): "embedding",
    ("DINOV2Embedding", "cls_token"): "embedding",
    ("DINOV2Embedding", "mask_token"): "embedding",
    ("DINOV2Embedding", "interpolated_position_embeddings"): "embedding",
    ("DINOV2LayerScale", "lambda1"): "scale",  # layer-scale gain on the residual branch
    ("SigLIPMultiHeadAttentionPooling", "variable"): "embedding",  # the learned query token (probe)
    ("SigLIPVisionEmbedding", "position_ids"): "statistic",
    ("MixtralMoeExperts", "expert_feedforward_gate_dense"): "kernel",  # per-expert weight matrices
    ("MixtralMoeExperts", "expert_feedforward_intermediate_dense"): "kernel",
    ("MixtralMoeExperts", "expert_feedforward_output_dense"): "kernel",
}


def _expected_kind(layer, variable) -> str:
    class_name = type(layer).__name__
    if not variable.trainable and layer.trainable:
        return "statistic"  # state of a trainable layer (moving statistics); frozen layers keep their role
    if (class_name, variable.name) in _SPECIAL:
        return _SPECIAL[(class_name, variable.name)]
    if isinstance(layer, (keras.layers.Embedding,)) or class_name == "PositionEmbedding":
        return "embedding"
    if "Norm" in class_name:
        return "norm"
    if variable.name.endswith("kernel"):
        return "kernel"
    if variable.name == "bias":
        return "bias"
    raise AssertionError(f"no stated role for {class_name}.{variable.name}: add it to _SPECIAL")


def _expected(model, paths_model=None) -> dict[str, list[str]]:
    """Path -> expected (kind, trainable) (a list: T5 has two variables with one path), from the live model."""
    owners = _owners(model)
    kinds = collections.defaultdict(list)
    reference = paths_model or model
    for variable, named in zip(model.weights, reference.weights):
        kinds[named.path].append((_expected_kind(owners[id(variable)], variable), variable.trainable))
    return kinds


def _check(report, expected: dict[str, list[str]], count: int, order: list[str]) -> None:
    assert len(report.variables) == count
    # model.weights order, across layers too: keras_hub's tracking order (the attributes its source
    # assigns, then a Functional's other layers in graph order), which the file's keys do not keep.
    assert [v.record.path for v in report.variables] == order
    got = collections.defaultdict(list)
    for variable in report.variables:
        got[variable.record.path].append((variable.classification.kind.value, variable.record.trainable))
    assert set(got) == set(expected), sorted(set(got) ^ set(expected))
    wrong = {p: (sorted(got[p]), sorted(expected[p])) for p in got if sorted(got[p]) != sorted(expected[p])}
    assert not wrong, wrong
    unknown = [v.record.path for v in report.variables if not v.record.leaf_known]
    assert not unknown, unknown
    low = [v.record.path for v in report.variables if v.classification.confidence is Confidence.LOW]
    assert not low, low


@pytest.mark.parametrize("name", list(hub_zoo.ALL))
def test_keras_file_paths_and_kinds_match_load_model(hub_files, name):
    model, keras_path, _ = hub_files[name]
    keras.backend.clear_session()
    loaded = keras.saving.load_model(keras_path)
    assert len(loaded.weights) == len(model.weights)
    _check(_report(keras_path), _expected(model, loaded), len(model.weights), [w.path for w in loaded.weights])


@pytest.mark.parametrize("name", list(hub_zoo.ALL))
def test_weights_file_paths_and_kinds_match_the_saving_model(hub_files, name):
    model, _, weights_path = hub_files[name]
    _check(_report(weights_path), _expected(model), len(model.weights), [w.path for w in model.weights])


def test_zoo_is_broad(hub_files):
    """At least 15 backbones of different families, plus task models."""
    backbones = {
        type(model).__name__ for model, _, _ in hub_files.values() if isinstance(model, keras_hub.models.Backbone)
    }
    tasks = {type(model).__name__ for model, _, _ in hub_files.values() if isinstance(model, keras_hub.models.Task)}
    assert len(backbones) >= 15 and len(tasks) >= 2, (backbones, tasks)


def test_two_dimensional_attention_biases_are_biases(hub_files):
    """keras_hub's (heads, head_dim) attention biases are never decayed as kernels: a rank rule would decay them."""
    _, keras_path, _ = hub_files["vit"]
    report = _report(keras_path)
    biases = [v for v in report.variables if v.record.leaf == "bias" and v.record.ndim == 2]
    assert len(biases) == 3
    assert all(v.classification.kind.value == "bias" and not v.decision.decay for v in biases)
    assert {v.record.path for v in biases} == {
        f"vit_encoder/transformer_block_1/mha/{p}/bias" for p in ("query", "key", "value")
    }


def test_keras_rule_is_exact_on_every_hub_model_with_a_real_optimizer(hub_files):
    """`rules --target keras` on every keras_hub .keras, applied as the snippet does, then one AdamW
    step with zero gradients: exactly the variables the policy decays move."""
    from test_rules import apply_keras_rule, moved_by_real_optimizer

    from decay_audit.stages.rules import emit_rules

    for name, (_, keras_path, _) in hub_files.items():
        report = _report(keras_path)  # no-bias-norm: excludes biases, norms and embeddings by leaf and path
        emission = emit_rules(report, "keras")
        assert emission.ok, (name, emission.wrongly_selected, emission.unexpressible)
        keras.backend.clear_session()
        model = keras.saving.load_model(keras_path)
        optimizer = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
        apply_keras_rule(model, emission.document, optimizer)
        moved = moved_by_real_optimizer(model, optimizer)
        expected = collections.Counter(
            v.record.path for v in report.variables if v.decision.decay and v.record.trainable
        )
        assert moved == expected, (name, moved - expected, expected - moved)
