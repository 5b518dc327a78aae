"""What Hugging Face ``transformers`` TF models call their variables, and what each one is.

A ``tf_model.h5`` (``TFPreTrainedModel.save_pretrained``) is a tf_keras ``save_weights`` file:
each top-level layer's group lists the full ``tf.Variable`` names (``tf_bert_model/bert/embeddings/
word_embeddings/weight:0``), which are exactly ``variable.name`` in the TF model's
``trainable_variables``. No layer class is recorded, so the file's names are all there is.
Variables of Keras' own layers inside HF models keep Keras leaves (``kernel``, ``bias``,
``gamma``, ``beta``, ``embeddings``) and are judged as any Keras file's are. The rest come from
``add_weight`` calls inside HF layer classes, whose names say nothing generic: ``weight`` is a token
table in ``TFBertEmbeddings`` (inside ``tf.name_scope("word_embeddings")``), a matrix in GPT-2's
``TFConv1D``, a gain in ``TFT5LayerNorm``. This module lists every such ``add_weight`` of the
installed ``transformers`` with its role; ``scripts/hf_add_weights.py`` re-reads the library's
source (AST, no import) and ``tests/test_hf.py`` fails when a version adds or drops one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from decay_audit.kinds import Kind

TRANSFORMERS_VERSION = "4.49.0"
"""The ``transformers`` release whose TF modeling sources these tables were checked against
(its 70 ``modeling_tf_*.py`` files; 4.x is the last line with TF models)."""

HF_NAMING = "transformers"
"""``VariableRecord.naming`` of a variable read from a Hugging Face TF checkpoint."""
HF_NAMING_NEWER = "transformers-newer"
"""The same, for a checkpoint saved by a transformers newer than :data:`TRANSFORMERS_VERSION`:
the table may miss what that version added, so its word counts for less."""

NAME_SEPARATOR = "_._"
"""HF names list-held layers ``layer_._0``, ``h_._3``, ``block_._1`` (``name=f"layer_._{i}"``):
a weight name containing it is a Hugging Face TF checkpoint even without ``config.json``."""


@dataclass(frozen=True)
class HFWeight:
    """One variable an HF layer class creates with ``add_weight`` (not a Keras layer's own)."""

    leaf: str
    """The ``add_weight`` name, i.e. the last path component (``weight``, ``cls_token``)."""
    kind: Kind
    """Its role for weight decay."""
    role: str
    """Why, in words that name the HF class and what the variable does there."""
    scope: str | None = None
    """The path component before the leaf (``tf.name_scope`` or owning layer name) the entry needs,
    as a regex; None: any. Entries with a scope are tried first."""
    trainable: bool = True
    """False where HF creates it with ``trainable=False`` (an index buffer, a frozen logits bias)."""


_EMBED_SCOPE = r".*(embed|^wte$|^wpe$|^shared$|^token_embedding$).*"
_POSITION_SCOPE = r"(.*_)?(pos|positions?|positional)(_.*)?"
"""An owner whose name has a ``pos``/``position(s)``/``positional`` word (``embed_positions``,
``pos_table``, ``positional_encoding``): the HF TF position layers' naming, whatever the prefix."""

HF_WEIGHTS: tuple[HFWeight, ...] = (
    # -- scoped: the same leaf means different things under different owners ----------------------
    HFWeight(
        "weight",
        Kind.EMBEDDING,
        "token embedding table (TFBertEmbeddings and kin: "
        "add_weight in name_scope 'word_embeddings'), rows looked up by token id",
        r"word_embeddings",
    ),
    HFWeight(
        "weight",
        Kind.EMBEDDING,
        "token embedding table (TFCLIPTextEmbeddings: name_scope 'token_embedding'), rows looked up by token id",
        r"token_embedding",
    ),
    HFWeight(
        "weight",
        Kind.EMBEDDING,
        "position table of a layer whose name says position (TFWhisperPositionalEmbedding "
        "'embed_positions', sinusoidal or learned): its rows are picked by position, no row "
        "multiplies an activation",
        _POSITION_SCOPE,
    ),
    HFWeight(
        "weight",
        Kind.EMBEDDING,
        "embedding table of a TFSharedEmbeddings / embedding layer, rows "
        "looked up by id (tied to the LM head where the model ties them)",
        _EMBED_SCOPE,
    ),
    HFWeight(
        "weight",
        Kind.NORM,
        "normalization gain (TFT5LayerNorm, TF*RMSNorm, TFDebertaLayerNorm, TFSamLayerNorm, TFNoNorm)",
        r".*(norm|^ln).*",
    ),
    HFWeight("weight", Kind.NORM, "gain of TFConvNextV2GRN (global response normalization)", r"grn"),
    HFWeight(
        "embeddings",
        Kind.EMBEDDING,
        "relative-position bias table (TFT5Attention "
        "'relative_attention_bias'), rows looked up by relative-distance bucket",
        r"relative_attention_bias",
    ),
    HFWeight(
        "output_weights", Kind.KERNEL, "TAPAS cell-selection weights, matrix-multiplied with hidden states", r"output"
    ),
    HFWeight("output_bias", Kind.BIAS, "TAPAS cell-selection bias", r"output"),
    HFWeight(
        "column_output_weights",
        Kind.KERNEL,
        "TAPAS column-selection weights, matrix-multiplied with hidden states",
        r"column_output",
    ),
    HFWeight("column_output_bias", Kind.BIAS, "TAPAS column-selection bias", r"column_output"),
    # -- any owner ------------------------------------------------------------------------------
    HFWeight(
        "weight",
        Kind.KERNEL,
        "weight matrix multiplied with hidden states (GPT-2 TFConv1D, TFIdeficsDecoupledLinear, an LM head's decoder)",
    ),
    HFWeight("embeddings", Kind.EMBEDDING, "embedding table (a Keras Embedding or sinusoidal position table)"),
    HFWeight("bias", Kind.BIAS, "additive bias (of a Keras layer, an HF head or TFConv1D)"),
    HFWeight(
        "kernel", Kind.KERNEL, "weight matrix or filter (a Keras Dense/Conv kernel, TFConvBert's GroupedLinearLayer)"
    ),
    HFWeight("final_logits_bias", Kind.BIAS, "logits bias of BART-family LM heads (BiasLayer)", trainable=False),
    HFWeight("q", Kind.KERNEL, "XLNet query projection (d_model, heads, head_dim), contracted with hidden states"),
    HFWeight("k", Kind.KERNEL, "XLNet key projection, contracted with hidden states"),
    HFWeight("v", Kind.KERNEL, "XLNet value projection, contracted with hidden states"),
    HFWeight("o", Kind.KERNEL, "XLNet output projection, contracted with attention output"),
    HFWeight("r", Kind.KERNEL, "XLNet position projection, contracted with position encodings"),
    HFWeight("r_kernel", Kind.KERNEL, "Funnel position projection, contracted with position encodings"),
    HFWeight("w_g", Kind.KERNEL, "SwiftFormer additive-attention query weights, multiplied with queries"),
    HFWeight("r_w_bias", Kind.BIAS, "XLNet/Funnel content bias (heads, head_dim), added to the query"),
    HFWeight("r_r_bias", Kind.BIAS, "XLNet/Funnel position bias (heads, head_dim), added to the query"),
    HFWeight("r_s_bias", Kind.BIAS, "XLNet/Funnel segment bias (heads, head_dim), added to the query"),
    HFWeight("q_bias", Kind.BIAS, "DeBERTa query bias, added to the projected query"),
    HFWeight("v_bias", Kind.BIAS, "DeBERTa value bias, added to the projected value"),
    HFWeight("decoder/bias", Kind.BIAS, "LM-head output bias (TFAlbertMLMHead, TFRemBertLMPredictionHead)"),
    HFWeight("decoder/weight", Kind.KERNEL, "untied LM-head matrix: multiplies hidden states into logits"),
    HFWeight("dense/weight", Kind.KERNEL, "TFMobileBertLMPredictionHead extra matrix, multiplied with hidden states"),
    HFWeight(
        "seg_embed",
        Kind.EMBEDDING,
        "XLNet/Funnel segment embedding (2, heads, head_dim): one row per same/different-segment id",
    ),
    HFWeight("rel_embeddings.weight", Kind.EMBEDDING, "DeBERTa relative-position embedding table"),
    HFWeight("rel_pos_h", Kind.EMBEDDING, "SAM relative-position table (height), rows looked up by distance"),
    HFWeight("rel_pos_w", Kind.EMBEDDING, "SAM relative-position table (width), rows looked up by distance"),
    HFWeight(
        "relative_position_bias_table",
        Kind.EMBEDDING,
        "Swin/BEiT relative-position bias table, rows looked up by relative_position_index",
    ),
    HFWeight(
        "relative_position_index",
        Kind.STATISTIC,
        "Swin index buffer into the bias table (not trained)",
        trainable=False,
    ),
    HFWeight("inv_freq", Kind.STATISTIC, "ESM rotary inverse frequencies (not trained)", trainable=False),
    HFWeight(
        "position_embeddings",
        Kind.EMBEDDING,
        "learned position embedding added to patch tokens (ViT/DeiT/GroupViT/BEiT; timm's no_weight_decay 'pos_embed')",
    ),
    HFWeight("position_embedding", Kind.EMBEDDING, "learned position embedding (BLIP vision)"),
    HFWeight("positional_embedding", Kind.EMBEDDING, "SAM positional-encoding matrix"),
    HFWeight("positional_embeddings", Kind.EMBEDDING, "Swin absolute position embedding"),
    HFWeight("pos_embed", Kind.EMBEDDING, "learned position embedding (LayoutLMv3, SAM)"),
    HFWeight("decoder_pos_embed", Kind.EMBEDDING, "ViT-MAE decoder position embedding"),
    HFWeight("cls_token", Kind.EMBEDDING, "learned [CLS] token (timm's no_weight_decay 'cls_token')"),
    HFWeight("distillation_token", Kind.EMBEDDING, "DeiT distillation token (timm's 'dist_token')"),
    HFWeight("mask_token", Kind.EMBEDDING, "learned [MASK] token"),
    HFWeight("mask_tokens.weight", Kind.EMBEDDING, "SAM mask-output tokens"),
    HFWeight("iou_token.weight", Kind.EMBEDDING, "SAM IoU-prediction token"),
    HFWeight("no_mask_embed.weight", Kind.EMBEDDING, "SAM no-mask embedding"),
    HFWeight("not_a_point_embed.weight", Kind.EMBEDDING, "SAM padding-point embedding"),
    HFWeight(r"point_embed_._\d+.weight", Kind.EMBEDDING, "SAM point-type embedding"),
    HFWeight("class_embedding", Kind.EMBEDDING, "CLIP/BLIP vision class token"),
    HFWeight("group_token", Kind.EMBEDDING, "GroupViT learned group tokens"),
    HFWeight("mask_emb", Kind.EMBEDDING, "XLNet learned mask embedding"),
    HFWeight("masked_spec_embed", Kind.EMBEDDING, "Wav2Vec2/HuBERT learned masked-frame embedding"),
    HFWeight("cvt.encoder.stages.2.cls_token", Kind.EMBEDDING, "CvT learned [CLS] token"),
    HFWeight("logit_scale", Kind.SCALE, "CLIP-style learned logit temperature"),
    HFWeight("layer_scale", Kind.SCALE, "SwiftFormer layer-scale gain"),
    HFWeight(r"layer_scale_\d", Kind.SCALE, "SwiftFormer layer-scale gain"),
    HFWeight("layer_scale_parameter", Kind.SCALE, "ConvNeXt layer-scale gain"),
    HFWeight(r"lambda_\d", Kind.SCALE, "BEiT/Data2Vec layer-scale gain"),
    HFWeight(r"alpha_[a-z_]+", Kind.SCALE, "IDEFICS gated cross-attention gate"),
    HFWeight("layer_weights", Kind.SCALE, "Wav2Vec2 weighted-layer-sum weights (a softmax over layers)"),
    HFWeight("weight_g", Kind.SCALE, "weight-norm magnitude of a TF*WeightNormConv1D (per-filter gain)"),
    HFWeight("weight_v", Kind.KERNEL, "weight-norm direction of a TF*WeightNormConv1D: the convolution filter"),
    HFWeight("gamma", Kind.NORM, "normalization gain (Keras LayerNormalization/BatchNormalization, TF*GroupNorm)"),
    HFWeight("beta", Kind.NORM, "normalization offset (Keras LayerNormalization/BatchNormalization, TF*GroupNorm)"),
)
"""Every ``add_weight`` name in transformers' TF models, with its role.

Leaves created dynamically (``BiasLayer(name=...)``, ``resize_token_embeddings``' copies) take
the name of what they replace and need no entry.
"""

_COMPILED = tuple(
    (
        re.compile(rf"(?:{entry.leaf})\Z"),
        re.compile(rf"(?:{entry.scope})\Z", re.IGNORECASE) if entry.scope else None,
        entry,
    )
    for entry in sorted(HF_WEIGHTS, key=lambda e: e.scope is None)
)


@dataclass(frozen=True)
class HFFrozenLayer:
    """A layer an HF model's own code freezes (``layer.trainable = False`` in ``__init__``): the
    checkpoint records no trainability, ``from_pretrained``'s model has it non-trainable."""

    model_type: str
    """``config.json`` ``model_type`` of the models whose code does it."""
    path: str
    """Regex ``re.search``ed on the variable path."""
    why: str


HF_FROZEN_LAYERS: tuple[HFFrozenLayer, ...] = (
    HFFrozenLayer(
        "whisper",
        r"(^|/)encoder/embed_positions/",
        "TFWhisperEncoder.__init__ sets embed_positions.trainable = False (a fixed sinusoidal table)",
    ),
)
"""Layers transformers' TF code freezes on construction, not by a user's call (``freeze_feature_encoder``)."""


def hf_frozen_by_library(model_type: str | None, path: str) -> HFFrozenLayer | None:
    """The entry that says transformers builds this variable's layer frozen, or None."""
    return next((e for e in HF_FROZEN_LAYERS if e.model_type == model_type and re.search(e.path, path)), None)


def hf_weight_for(path: str, shape: tuple[int | None, ...]) -> HFWeight | None:
    """The table entry for a variable path of an HF TF checkpoint, or None."""
    parts = path.split("/")
    leaf = parts[-1]
    owner = parts[-2] if len(parts) > 1 else ""
    two = "/".join(parts[-2:])
    for leaf_re, scope_re, entry in _COMPILED:
        if leaf_re.match(two) and "/" in entry.leaf:
            return entry
        if not leaf_re.match(leaf):
            continue
        if scope_re is not None and not scope_re.match(owner):
            continue
        if entry.leaf == "weight" and entry.kind is Kind.KERNEL and _vector(shape):
            continue  # a 1-D ``weight`` outside a norm scope is no matrix (TFNoNorm under another name)
        if entry.scope == _POSITION_SCOPE and len(shape) != 2:
            continue  # a position table is (positions, width); anything else under such a name is not one
        return entry
    return None


def _vector(shape: tuple[int | None, ...]) -> bool:
    return sum(1 for d in shape if d not in (1, None)) <= 1


def version_is_checked(version: str | None) -> bool:
    """Whether a checkpoint's ``transformers_version`` is one these tables cover (same or older 4.x)."""
    if not version:
        return True
    try:
        mine = tuple(int(p) for p in TRANSFORMERS_VERSION.split(".")[:2])
        theirs = tuple(int(re.match(r"\d+", p).group()) for p in version.split(".")[:2])  # type: ignore[union-attr]
    except (AttributeError, ValueError):
        return False
    return theirs <= mine
