"""The reviewed map from keras_hub variables to kinds: the one part of the table a person decides.

Each entry was read against the layer's ``call``; a variable no entry covers is collected in
``MISSING`` and stops the generator, so a new keras_hub version cannot slip an unreviewed
variable into the table.
"""

from __future__ import annotations

import re

# (class-name regex, leaf regex) -> (kind, role). First match wins. Reviewed against each layer's call().
REVIEWED_KINDS: tuple[tuple[str, str, str, str], ...] = (
    # Normalization gains and offsets.
    (r"Norm|LayerNorm|RMS", r"^(scale|weight|gamma)$", "norm", "normalization gain"),
    (r"Norm|LayerNorm|RMS", r"^(bias|beta|offset)$", "norm", "normalization offset"),
    (r"Norm", r"^(std_scale)$", "norm", "normalization gain"),
    (r"Norm", r"^(std_bias)$", "norm", "normalization offset"),
    # Layer scale: a per-channel gain on a residual branch (CaiT/ConvNeXt style).
    (r"LayerScale|Scale", r"^(gamma|lambda1|scale|layer_scalar)$", "scale", "layer-scale gain on a residual branch"),
    (
        r".",
        r"^(layer_scalar|lambda1|per_dim_scale|per_expert_scale|correct_output_scale|num_points_scale|reg_scale)$",
        "scale",
        "learned multiplicative gain",
    ),
    (r"Affine", r"^scale$", "scale", "learned affine gain applied elementwise to activations"),
    (r".", r"^sinks$", "bias", "per-head attention-sink logit appended to the attention scores"),
    (r".", r"^logit_scale$", "scale", "learned logit temperature (CLIP/SigLIP)"),
    (r".", r"^logit_bias$", "bias", "learned logit offset (SigLIP)"),
    (r".", r"^attribute:probe$", "embedding", "learned query token of attention pooling (the probe)"),
    (
        r"^T5MultiHeadAttention$",
        r"^embeddings$",
        "embedding",
        "T5 relative_attention_bias: one row per relative-distance bucket, looked up by bucket index",
    ),
    # Relative-position and attention-bias tables: indexed by a relative distance, i.e. lookup tables.
    (
        r".",
        r"^relative_attention_bias$",
        "embedding",
        "T5 relative-position bias table, one row per relative-distance bucket, looked up by bucket index",
    ),
    (
        r".",
        r"^relative_position_bias_table$",
        "embedding",
        "Swin relative-position bias table, looked up by relative-position index",
    ),
    (
        r".",
        r"^(rel_embedding|rel_embeddings|rel_pos_h|rel_pos_w)$",
        "embedding",
        "relative-position table, looked up by relative distance",
    ),
    # XLNet: per-head biases added to the query before scoring (Transformer-XL r_w_bias/r_r_bias/r_s_bias).
    (
        r".",
        r"^(content_attention_bias|positional_attention_bias|segment_attention_bias)$",
        "bias",
        "per-head bias added to the query before attention scoring (Transformer-XL r_w/r_r/r_s bias)",
    ),
    (r".", r"^segment_encoding$", "embedding", "per-segment-relation table selected by segment ids (XLNet seg_embed)"),
    # Learned tokens and tables that are added to or looked up by the input.
    (
        r".",
        r"^(embeddings|position_embeddings|position_embedding_table|tiled_position_embeddings|"
        r"interpolated_position_embeddings|pos_embed|position_embedding|pos_query_embeddings|class_embedding|"
        r"positional_encoding_gaussian_matrix)$",
        "embedding",
        "learned position or token table added to the input",
    ),
    (
        r".",
        r"^(class_token|cls_token|mask_token|mask_emb|register_tokens|query_tokens|"
        r"pooling_attention_query|distillation_token)$",
        "embedding",
        "learned token concatenated to (or substituted into) the input sequence",
    ),
    # Weight matrices.
    (
        r".",
        r"^(kernel|output_kernel|conv1d_kernel|gate_proj|up_proj|down_proj|gate_up_proj|"
        r"expert_feedforward_[a-z_]+|w\d|v\d|a\d|g\d|x_[a-z]|k_[a-z]|r_k|pos_proj|"
        r"[a-z_]*_kernel)$",
        "kernel",
        "weight matrix that multiplies the layer input",
    ),
    # Biases.
    (r".", r"^(bias|output_bias|dt_bias|[a-z_]*_bias)$", "bias", "bias added to the layer output"),
    (
        r".",
        r"^(A_log|time_mix_[a-z]|token_ordering)$",
        "scale",
        "per-channel decay/mixing coefficient of a recurrent state update",
    ),
)

NON_TRAINABLE_ROLE = ("statistic", "state the optimizer never updates")

MISSING: list[str] = []
"""``Class.leaf`` of every trainable variable no REVIEWED_KINDS entry covered."""


def reviewed_kind(class_name: str, leaf: str, trainable: bool) -> tuple[str, str]:
    if not trainable:
        return NON_TRAINABLE_ROLE
    for class_pattern, leaf_pattern, kind, role in REVIEWED_KINDS:
        if re.search(class_pattern, class_name) and re.search(leaf_pattern, leaf):
            return kind, role
    MISSING.append(f"{class_name}.{leaf}")
    return "other", "unreviewed"
