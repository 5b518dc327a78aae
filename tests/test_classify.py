"""Classifier cases beyond the easy ones, from the failure modes in shared FACTS.md."""

from __future__ import annotations

import pytest

from decay_audit.classify import classify, classify_record
from decay_audit.inventory import VariableRecord
from decay_audit.kinds import Confidence, Kind
from decay_audit.policy import decide


def record(path: str, shape, layer_class=None, builtin=False, trainable=True, graph_uses=(), leaf_known=True):
    parts = path.split("/")
    return VariableRecord(
        path=path,
        leaf=parts[-1],
        layer=parts[-2] if len(parts) > 1 else None,
        layer_class=layer_class,
        shape=tuple(shape),
        dtype="float32",
        trainable=trainable,
        origin="test",
        leaf_known=leaf_known,
        layer_builtin=builtin,
        graph_uses=tuple(graph_uses),
    )


@pytest.mark.parametrize(
    "path,shape,layer_class,kind",
    [
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
        # Learned tokens: timm's no_weight_decay names (FACTS: timm #2712), not "other".
        ("vit/cls_token", (1, 1, 768), None, Kind.EMBEDDING),
        ("vit_patching_and_embedding/class_token", (1, 1, 768), None, Kind.EMBEDDING),
        ("encoder_block_attn_mask_layer/mask_emb", (1, 1, 768), None, Kind.EMBEDDING),
        # Relative-position and segment tables: rows picked by index, so embeddings.
        ("stage_0/blocks_0/attn/relative_position_bias_table", (169, 4), "WindowAttention", Kind.EMBEDDING),
        ("encoder/block_0/SelfAttention/relative_attention_bias/embeddings", (32, 8), None, Kind.EMBEDDING),
        ("t5/self_attention/relative_attention_bias", (32, 8), None, Kind.EMBEDDING),
        ("rel_embedding/rel_embeddings", (512, 768), "RelativeEmbedding", Kind.EMBEDDING),
        ("sam/attn/rel_pos_h", (27, 64), None, Kind.EMBEDDING),
        # XLNet's attention biases are added to the query (q + r_w_bias), never indexed: biases.
        ("xlnet_encoder_0/content_attention_bias", (12, 64), "XLNetEncoder", Kind.BIAS),
        ("xlnet_encoder_0/positional_attention_bias", (12, 64), "XLNetEncoder", Kind.BIAS),
        ("xlnet_encoder_0/segment_attention_bias", (12, 64), "XLNetEncoder", Kind.BIAS),
        ("transformer/layer_0/rel_attn/r_w_bias", (12, 64), None, Kind.BIAS),
        # An untied LM head multiplies hidden states into logits: a kernel in every format.
        ("token_embedding/reverse_embeddings", (768, 32000), "ReversibleEmbedding", Kind.KERNEL),
        ("token_embedding/reverse_embeddings", (768, 32000), None, Kind.KERNEL),
    ],
)
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


def test_segment_table_beats_its_einsum_use_in_a_graph():
    """XLNet's (2, heads, head_dim) segment table is einsum-contracted with queries in the export,
    but the segment relation of each pair picks the row: an embedding, and the graph is a conflict."""
    table = record("xlnet_encoder_0/segment_encoding", (2, 12, 64), "XLNetEncoder", graph_uses=("Einsum:1",))
    result = classify_record(table)
    assert result.kind is Kind.EMBEDDING and "segment" in result.evidence[0]
    assert any("Einsum" in c for c in result.conflicts)


def test_reverse_embeddings_beats_the_embedding_layer_name():
    head = record("token_embedding/reverse_embeddings", (16, 50), graph_uses=("MatMul:1",))
    result = classify_record(head)
    assert result.kind is Kind.KERNEL and "Dense kernel" in " ".join(result.evidence)
    assert not result.conflicts or all("embedding" in c for c in result.conflicts)


@pytest.mark.parametrize(
    "kernel_shape,bias_shape", [((16, 2, 8), (2, 8)), ((16, 4, 2, 8), (2, 8)), ((3, 16, 2, 8), (16, 2, 8))]
)
def test_nd_bias_matching_a_sibling_kernels_output_axes_is_a_bias(kernel_shape, bias_shape):
    """keras_hub attention biases whose class is not importable: only positions and shapes are left."""
    kernel = record("vit_encoder/block_0/attn/query/var_0", kernel_shape, "CachedMultiHeadAttention", leaf_known=False)
    bias = record("vit_encoder/block_0/attn/query/var_1", bias_shape, "CachedMultiHeadAttention", leaf_known=False)
    kinds = classify([kernel, bias])
    assert [k.kind for k in kinds] == [Kind.KERNEL, Kind.BIAS]
    assert "output axes" in kinds[1].evidence[0]
    assert decide(bias, kinds[1]).decay is False


def test_nd_variable_unlike_any_kernel_output_stays_a_matrix():
    a = record("block/var_0", (16, 2, 8), "Custom", leaf_known=False)
    b = record("block/var_1", (8, 2), "Custom", leaf_known=False)  # transposed: no output axes of var_0
    assert [k.kind for k in classify([a, b])] == [Kind.KERNEL, Kind.KERNEL]


def test_patch_embedding_filter_is_a_kernel_not_a_table():
    """ViT/CLIP/SigLIP ``patch_embedding`` is a Conv2D: the layer-name token 'embedding' must not
    turn its (kh, kw, in, out) filter into an embedding table."""
    conv = record("vit_patching_and_embedding/patch_embedding/var_0", (16, 16, 3, 768), "Conv2D", leaf_known=False)
    assert classify_record(conv).kind is Kind.KERNEL
    named = record("vision_model/embeddings/patch_embedding/kernel", (4, 4, 3, 16))
    assert classify_record(named).kind is Kind.KERNEL
    table = record("text/token_embedding/var_0", (50, 16), leaf_known=False)
    assert classify_record(table).kind is Kind.EMBEDDING


@pytest.mark.parametrize(
    "path,shape,layer_class,trainable,kind",
    [
        # float8 delayed-scaling state: trainable (overwrite_with_gradient), yet never decayed.
        ("dense/inputs_amax_history", (1024,), "Dense", True, Kind.STATISTIC),
        ("dense/kernel_scale", (), "Dense", True, Kind.STATISTIC),
        # int8/int4 quantization state beside an integer kernel.
        ("ein/kernel_scale", (1, 6), "EinsumDense", False, Kind.STATISTIC),
        ("emb/embeddings_zero", (10, 1), "Embedding", False, Kind.STATISTIC),
        # LoRA factors take the role of what they adapt.
        ("dense/lora_kernel_b", (2, 4), "Dense", True, Kind.KERNEL),
        ("emb/lora_embeddings_a", (10, 2), "Embedding", True, Kind.EMBEDDING),
        ("emb/lora_embeddings_b", (2, 8), "Embedding", True, Kind.EMBEDDING),
        # Without the class (a file that names no config), the leaf convention still tells.
        ("block/outputs_grad_amax_history", (1024,), None, True, Kind.STATISTIC),
        ("block/lora_embeddings_a", (10, 2), None, True, Kind.EMBEDDING),
    ],
)
def test_quantization_and_lora_variables(path, shape, layer_class, trainable, kind):
    result = classify_record(record(path, shape, layer_class, builtin=layer_class is not None, trainable=trainable))
    assert result.kind is kind
    if layer_class is not None:
        assert result.confidence is Confidence.HIGH


@pytest.mark.parametrize(
    "path,shape,layer_class,builtin,trainable,leaf_known,kind",
    [
        # A custom class's own variables in a .keras have positional leaves: shape still speaks.
        ("tok/var_1", (), "Tok", False, True, False, Kind.SCALE),  # a scalar temperature / logit scale
        ("tok/var_0", (1, 1, 8), "Tok", False, True, False, Kind.EMBEDDING),  # a (1, 1, width) learned token
        ("tok/var_0", (1, 1, 8), "Tok", False, False, False, Kind.STATISTIC),  # a frozen buffer is state
        # A name beats the shape: a (1, 1, C) gain called layer_scale is a scale.
        ("block/layer_scale", (1, 1, 8), None, False, True, True, Kind.SCALE),
        # A role beats the shape: Conv1D's (1, 1, filters) kernel is a kernel.
        ("conv/kernel", (1, 1, 8), "Conv1D", True, True, True, Kind.KERNEL),
        # Class or layer names saying what a positional variable is.
        ("class_token/var_0", (1, 1, 8), "ClassToken", False, True, False, Kind.EMBEDDING),
        ("clip_head/var_0", (), "LogitScale", False, True, False, Kind.SCALE),
        # A (positions, width) table whose layer says position is an embedding, whatever its leaf.
        ("decoder/pos_table/var_0", (10, 8), "PosTable", False, True, False, Kind.EMBEDDING),
    ],
)
def test_unnamed_tokens_scalars_and_position_tables(path, shape, layer_class, builtin, trainable, leaf_known, kind):
    result = classify_record(
        record(path, shape, layer_class=layer_class, builtin=builtin, trainable=trainable, leaf_known=leaf_known)
    )
    assert result.kind is kind, result.evidence
