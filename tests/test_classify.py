"""Classifier cases beyond the easy ones, from the failure modes in shared FACTS.md."""

from __future__ import annotations

import pytest

from decay_audit.classify import classify, classify_record
from decay_audit.inventory import VariableRecord
from decay_audit.kinds import Confidence, Kind
from decay_audit.policy import decide


def record(path: str, shape, layer_class=None, builtin=False, trainable=True, graph_uses=(), leaf_known=True):
    parts = path.split("/")
    return VariableRecord(path=path, leaf=parts[-1], layer=parts[-2] if len(parts) > 1 else None,
                          layer_class=layer_class, shape=tuple(shape), dtype="float32", trainable=trainable,
                          origin="test", leaf_known=leaf_known, layer_builtin=builtin, graph_uses=tuple(graph_uses))


@pytest.mark.parametrize("path,shape,layer_class,kind", [
    # keras_hub BERT: 2-D attention biases are biases, whatever ndim says.
    ("encoder/layer_0/self_attention/query/bias", (12, 64), "EinsumDense", Kind.BIAS),
    ("bert/encoder/layer_0/attention/self/query/bias", (12, 64), None, Kind.BIAS),
    # keras_hub Gemma: RMS norms hold `scale`.
    ("decoder_block_0/pre_attention_norm/scale", (2048,), "RMSNormalization", Kind.NORM),
    ("decoder_block_0/pre_attention_norm/scale", (2048,), None, Kind.NORM),
    # ConvNeXt LayerScale with generic variable names.
    ("convnext_tiny_stage_0_block_0_layer_scale/variable_3", (96,), "LayerScale", Kind.SCALE),
    ("convnext_tiny_stage_0_block_0_layer_scale/variable_3", (96,), None, Kind.SCALE),
    # Model Garden / HF TF BERT names.
    ("bert/embeddings/LayerNorm/gamma", (768,), None, Kind.NORM),
    ("bert/embeddings/word_embeddings", (30522, 768), None, Kind.EMBEDDING),
    ("bert/embeddings/position_embeddings", (512, 768), None, Kind.EMBEDDING),
    ("transformer/ln_f/scale", (768,), None, Kind.NORM),
    ("model/T5LayerNorm/weight", (512,), "T5LayerNorm", Kind.NORM),
    ("Qwen2RMSNorm/weight", (896,), "Qwen2RMSNorm", Kind.NORM),
    # TF-Slim.
    ("InceptionV3/Conv2d_1a_3x3/weights", (3, 3, 3, 32), None, Kind.KERNEL),
    ("InceptionV3/Conv2d_1a_3x3/BatchNorm/beta", (32,), None, Kind.NORM),
    ("resnet/block1/prelu/alpha", (64,), None, Kind.SCALE),
    ("vit/cls_token", (1, 1, 768), None, Kind.OTHER),
])
def test_real_model_conventions(path, shape, layer_class, kind):
    result = classify_record(record(path, shape, layer_class))
    assert result.kind is kind, result
    assert result.evidence


def test_moving_statistics_are_never_decayed():
    stat = record("bn/moving_mean", (8,), "BatchNormalization", builtin=True, trainable=False)
    classification = classify_record(stat)
    assert classification.kind is Kind.STATISTIC and classification.confidence is Confidence.HIGH
    assert decide(stat, classification).decay is False


def test_frozen_kernel_keeps_its_kind_but_is_not_decayed():
    frozen = record("backbone/conv/kernel", (3, 3, 3, 8), "Conv2D", builtin=True, trainable=False)
    classification = classify_record(frozen)
    assert classification.kind is Kind.KERNEL
    assert decide(frozen, classification).decay is False


def test_conflicting_evidence_is_reported():
    odd = record("block/bias", (4, 4), graph_uses=("MatMul:1",))
    result = classify_record(odd)
    assert result.conflicts, result
    assert any("MatMul" in c or "bias" in c for c in result.conflicts)


def test_unknown_positional_variables_are_low_confidence_but_judged():
    kernel = record("custom/var_0", (16, 8), "MyBlock", leaf_known=False)
    bias = record("custom/var_1", (8,), "MyBlock", leaf_known=False)
    kinds = classify([kernel, bias])
    assert [k.kind for k in kinds] == [Kind.KERNEL, Kind.BIAS]
    assert all(k.confidence is Confidence.LOW for k in kinds)


def test_builtin_role_beats_misleading_layer_name():
    tricky = record("layer_norm_like_dense/kernel", (8, 8), "Dense", builtin=True)
    result = classify_record(tricky)
    assert result.kind is Kind.KERNEL and result.confidence is Confidence.HIGH
