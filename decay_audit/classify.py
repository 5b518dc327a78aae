"""Classify every variable (kernel, bias, norm, embedding, scale, statistic, other), with evidence.

Each source of evidence gives an opinion with a strength; the strongest wins, agreeing
opinions are listed as evidence, disagreeing ones (other than shape, which real models
break all the time: MultiHeadAttention's 2-D biases) are reported as conflicts.
Strongest first, as in DESIGN.md: the owning layer's class and the variable's role in it;
how a saved graph consumes it; leaf-name conventions of Keras 2/3, TF-Slim and Model Garden;
the owning class's or layer's name; shape.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import dataclass

from decay_audit.inventory import VariableRecord
from decay_audit.kinds import Confidence, Kind
from decay_audit.knowledge import slot_for_leaf
from decay_audit.knowledge import transformers as hf_names
from decay_audit.knowledge.keras import adapted_slot

ROLE = 4.0  # Keras' own class, variable's role known from its source
HINTED_ROLE = 3.0  # same table, class guessed from Keras' auto-generated layer name, or a user class of that name
TABLE = 2.75  # relative-position / segment tables by name: beats their einsum use in a graph
GRAPH = 2.5  # MatMul/Conv/BiasAdd/FusedBatchNorm/Gather input position in a saved graph
LEAF = 2.0  # leaf-name convention
CLASS_NAME = 2.0  # tokens in the owning class's name (RMSNorm, LayerScale, PositionEmbedding)
LAYER_NAME = 1.5  # tokens in the owning layer's name (ln_f, layer_norm, embed)
SIBLING_SHAPE = 1.5  # n-D shape equal to the output axes of a higher-rank kernel beside it
WEAK_GRAPH = 1.0  # elementwise Mul/Add: consistent with gains and offsets, proves little
STATE = 1.0  # not trainable, nothing else known
SHAPE = 0.5  # rank alone
CONFLICT_THRESHOLD = LEAF  # weaker disagreement (layer names, elementwise ops, shape) is normal, not a conflict


@dataclass(frozen=True)
class Classification:
    """What a variable is, and why decay-audit thinks so."""

    kind: Kind
    confidence: Confidence
    evidence: tuple[str, ...]
    """Reasons that support ``kind``, strongest first."""
    conflicts: tuple[str, ...] = ()
    """Reasons that point elsewhere; non-empty means a human should look."""


@dataclass(frozen=True)
class _Opinion:
    kind: Kind
    strength: float
    reason: str


# -- leaf-name conventions ----------------------------------------------------------------------

_LEAF_KINDS: tuple[tuple[re.Pattern[str], Kind, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind, why)
    for pattern, kind, why in (
        (
            r"^reverse_embeddings$",
            Kind.KERNEL,
            "untied LM head of keras_hub's ReversibleEmbedding: it multiplies hidden states into logits, as a "
            "Dense kernel does (nothing looks its rows up by id)",
        ),
        (
            r"^(kernel|depthwise_kernel|pointwise_kernel|recurrent_kernel|weights?|w|lora_kernel_[ab]|"
            r"kernel_\d+|query_kernel|key_kernel|value_kernel|output_kernel)$",
            Kind.KERNEL,
            "Keras/TF-Slim name for a weight matrix or filter",
        ),
        (r"^(bias|biases|b|bias_\d+|(?!relative_)[a-z_]*_bias)$", Kind.BIAS, "conventional name of an additive bias"),
        (r"^(gamma|beta|offset)$", Kind.NORM, "Keras/TF-Slim/Model Garden name of a normalization gain or offset"),
        (
            r"^(embeddings?|[a-z_]*_embeddings?|embedding_table|word_embeddings|wte|wpe)$",
            Kind.EMBEDDING,
            "conventional name of an embedding table",
        ),
        (
            r"^((cls|class|mask|dist|distillation|reg|register|group)_tokens?|[a-z_]*_emb|pos_embed|"
            r"[a-z_]*_pos_embed)$",
            Kind.EMBEDDING,
            "a learned token or position vector added to the inputs (timm's no_weight_decay "
            "names: cls_token, pos_embed, dist_token, mask_token)",
        ),
        (
            r"^(moving_[a-z_]+|running_[a-z_]+|mean|variance|count|num_batches_tracked|seed|"
            r"seed_generator_state|iterations?|step|global_step|counter|[a-z_]*_count)$",
            Kind.STATISTIC,
            "conventional name of a running statistic or counter",
        ),
        (
            r"^lora_embeddings_[ab]$",
            Kind.EMBEDDING,
            "Keras name of a LoRA factor of an embedding table: the ids pick rows of its low-rank update",
        ),
        (
            r"^((kernel|embeddings|reverse_embeddings)_(scale|zero)|g_idx|zero_point|"
            r"(inputs|kernel|outputs_grad)_(scale|amax_history))$",
            Kind.STATISTIC,
            "Keras name of quantization state (a scale, zero point, group index or float8 amax history): "
            "set by quantize() or overwritten with its gradient, never a learned weight to decay",
        ),
        (
            r"^(alpha|alphas|layer_scale|ls_gamma|gain|logit_scale|temperature|scale_factor)$",
            Kind.SCALE,
            "conventional name of a learned gain, slope or temperature",
        ),
    )
)

_GENERIC_LEAF = re.compile(r"^(variable(_\d+)?|var_\d+|Variable(_\d+)?)$")

# Tables whose rows are picked by a relative distance, a bucket or a segment relation. They look
# like matrices (and XLNet's segment table is even einsum-contracted with queries), but no row
# multiplies an activation as a weight matrix does: the index picks the row. timm's
# no_weight_decay lists ``relative_position_bias_table``; Hugging Face's Trainer excludes T5's
# ``relative_attention_bias`` by its "bias" substring.
_RELATIVE_TABLE = re.compile(
    r"^(relative_attention_bias|relative_position_bias_table|relative_position_bias|rel_embeddings?|"
    r"relative_embeddings?|rel_pos_[hw]|rel_pos|rel_pos_bias|segment_encoding|seg_embed)$",
    re.IGNORECASE,
)

# -- name tokens (class or layer names) -----------------------------------------------------

_NAME_TOKENS: tuple[tuple[re.Pattern[str], Kind, str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE), kind, why)
    for pattern, kind, why in (
        (r"layer_?scale|layerscale|(^|_)ls(_|$)|scale_?layer", Kind.SCALE, "layer-scale"),
        (r"p_?re_?lu", Kind.SCALE, "PReLU"),
        (r"temperature|logit_?scale", Kind.SCALE, "temperature"),
        # A ViT-style ``ClassToken`` layer (add_weight of shape (1, 1, width)) saved in a .keras, where
        # the variable's own name is lost: the class or layer name still says what it holds.
        (r"(cls|class|reg|register|mask|dist|distillation)_?tokens?", Kind.EMBEDDING, "learned-token"),
        (r"norm|(^|_)ln(_|\d|$)|ln_f|(^|_)bn(_|\d|$)|(^|_)rms(_|\d|$)", Kind.NORM, "normalization"),
        (r"embed|(^|_)wte$|(^|_)wpe$", Kind.EMBEDDING, "embedding"),
        # Checked only against table-shaped variables (below): a (positions, width) table whose
        # layer says position has its rows picked by position, whatever the leaf is called.
        (r"(^|_)(pos|positions?|positional)(_|\d|$)", Kind.EMBEDDING, "position-table"),
    )
)

_ANY_NAME_TOKEN = re.compile("|".join(f"(?:{pattern.pattern})" for pattern, _, _ in _NAME_TOKENS), re.IGNORECASE)
"""Whether any of ``_NAME_TOKENS`` is in a name: one search instead of seven for the many layer
names that hold none (``dense_17``, ``branch_2041``)."""


@functools.lru_cache(maxsize=4096)
def _name_token_matches(name: str) -> tuple[tuple[Kind, str], ...]:
    """The ``(kind, what)`` of every name token in ``name``, in table order. Cached: class names
    repeat on every variable of a class."""
    if not _ANY_NAME_TOKEN.search(name):
        return ()
    return tuple((kind, what) for pattern, kind, what in _NAME_TOKENS if pattern.search(name))


# -- graph ops ------------------------------------------------------------------------------

_GRAPH_STRONG: dict[str, tuple[Kind, str]] = {
    "MatMul": (Kind.KERNEL, "matrix-multiplied with activations"),
    "BatchMatMulV2": (Kind.KERNEL, "matrix-multiplied with activations"),
    "BatchMatMulV3": (Kind.KERNEL, "matrix-multiplied with activations"),
    "Einsum": (Kind.KERNEL, "contracted with activations (einsum)"),
    "Conv2D": (Kind.KERNEL, "convolution filter"),
    "Conv3D": (Kind.KERNEL, "convolution filter"),
    "Conv": (Kind.KERNEL, "convolution filter"),
    "DepthwiseConv2dNative": (Kind.KERNEL, "depthwise convolution filter"),
    "Conv2DBackpropInput": (Kind.KERNEL, "transposed-convolution filter"),
    "Conv3DBackpropInputV2": (Kind.KERNEL, "transposed-convolution filter"),
    "BiasAdd": (Kind.BIAS, "added by BiasAdd"),
    "ResourceGather": (Kind.EMBEDDING, "indexed by ids (gather)"),
    "GatherV2": (Kind.EMBEDDING, "indexed by ids (gather)"),
}
_FUSED_BN = {"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"}
_GRAPH_WEAK: dict[str, tuple[Kind, str]] = {
    "Mul": (Kind.SCALE, "multiplied elementwise"),
    "AddV2": (Kind.BIAS, "added elementwise"),
    "Add": (Kind.BIAS, "added elementwise"),
}


def _graph_opinions(record: VariableRecord) -> Iterable[_Opinion]:
    strong_seen = False
    for use in record.graph_uses:
        op, _, position_text = use.partition(":")
        position = int(position_text) if position_text.isdigit() else -1
        if op in _FUSED_BN:
            kind = Kind.NORM if position in (1, 2) else Kind.STATISTIC
            yield _Opinion(
                kind,
                GRAPH,
                f"graph: input {position} of {op} ({'scale/offset' if kind is Kind.NORM else 'mean/variance'})",
            )
            strong_seen = True
        elif op in _GRAPH_STRONG:
            if op in ("GatherV2", "ResourceGather") and position != 0:
                continue
            if op == "BiasAdd" and position != 1:
                continue
            kind, why = _GRAPH_STRONG[op]
            yield _Opinion(kind, GRAPH, f"graph: {why} ({op})")
            strong_seen = True
    if not strong_seen:
        for use in record.graph_uses:
            op = use.partition(":")[0]
            if op in _GRAPH_WEAK and record.ndim <= 1:
                kind, why = _GRAPH_WEAK[op]
                yield _Opinion(kind, WEAK_GRAPH, f"graph: {why} ({op})")


@functools.lru_cache(maxsize=4096)
def _class_role(layer_class: str, leaf: str, builtin: bool) -> _Opinion | None:
    """The role the class table gives ``leaf`` of ``layer_class``. Cached: a model repeats a few
    (class, leaf) pairs thousands of times, and equal opinions that are one object compare at once."""
    slot = slot_for_leaf(layer_class, leaf)
    if slot is None and builtin:
        # Variables that quantize() or LoRA add to a Keras core layer (kernel_scale, lora_kernel_a).
        slot = adapted_slot(layer_class, leaf)
    if slot is None:
        return None
    strength = ROLE if builtin else HINTED_ROLE
    origin = "Keras class" if builtin else "class named"
    return _Opinion(slot.kind, strength, f"{origin} {layer_class}: `{slot.leaf}` is its {slot.role}")


def _role_opinion(record: VariableRecord) -> _Opinion | None:
    if record.layer_class and record.leaf_known:
        role = _class_role(record.layer_class, record.leaf, bool(record.layer_builtin))
        if role is not None:
            return role
    if record.class_hint and record.leaf_known and record.layer_class is None:
        slot = slot_for_leaf(record.class_hint, record.leaf)
        if slot is not None:
            return _Opinion(
                slot.kind,
                HINTED_ROLE,
                f"layer name {record.layer!r} is Keras' naming of {record.class_hint}: "
                f"`{slot.leaf}` is its {slot.role}",
            )
    return None


def _library_opinion(record: VariableRecord) -> _Opinion | None:
    """A library's own naming, where the file names no class (Hugging Face ``tf_model.h5``)."""
    if record.naming not in (hf_names.HF_NAMING, hf_names.HF_NAMING_NEWER):
        return None
    entry = hf_names.hf_weight_for(record.path, record.shape)
    if entry is None:
        return None
    strength = HINTED_ROLE if record.naming == hf_names.HF_NAMING else LEAF
    where = "/".join(record.path.split("/")[-2:])
    return _Opinion(entry.kind, strength, f"{record.naming_evidence}: `{where}`: {entry.role}")


def _table_opinion(record: VariableRecord) -> _Opinion | None:
    """Relative-position and segment tables, by the variable's or its own layer's name."""
    if record.leaf_known and _RELATIVE_TABLE.match(record.leaf):
        return _Opinion(
            Kind.EMBEDDING,
            TABLE,
            f"leaf `{record.leaf}`: a relative-position/segment table, "
            f"rows picked by relative distance or segment id (an embedding)",
        )
    if record.layer and _RELATIVE_TABLE.match(record.layer) and record.ndim >= 2 and _table_shaped(record):
        return _Opinion(
            Kind.EMBEDDING,
            TABLE,
            f"layer {record.layer!r}: a relative-position/segment table, "
            f"rows picked by relative distance or segment id (an embedding)",
        )
    return None


def _table_shaped(record: VariableRecord) -> bool:
    """(rows, width), or that behind leading 1s ((1, N, D) position tables, (1, 1, D) tokens)."""
    dims = list(record.shape)
    while len(dims) > 1 and dims[0] == 1:
        dims.pop(0)
    return len(dims) <= 2


@functools.lru_cache(maxsize=4096)
def _leaf_convention(leaf: str) -> _Opinion | None:
    """The opinion the first of ``_LEAF_KINDS`` that ``leaf`` matches gives, None for a generic or
    unmatched leaf. Cached: a model repeats a handful of leaves (``kernel``, ``bias``) thousands of times."""
    if _GENERIC_LEAF.match(leaf):
        return None
    for pattern, kind, why in _LEAF_KINDS:
        if pattern.match(leaf):
            return _Opinion(kind, LEAF, f"leaf `{leaf}`: {why}")
    return None


def _leaf_opinion(record: VariableRecord) -> _Opinion | None:
    if not record.leaf_known:
        return None
    convention = _leaf_convention(record.leaf)  # None for a generic leaf, which is never ``scale`` either
    if convention is not None:
        if convention.kind is Kind.KERNEL and record.ndim < 2:
            return None  # a 1-D ``weight`` is a gain (PyTorch-style norm naming), never a matrix
        return convention
    if record.leaf.lower() == "scale":
        context = f"{record.layer_class or ''} {record.layer or ''}"
        if re.search(r"norm", context, re.IGNORECASE):
            return _Opinion(Kind.NORM, LEAF, "leaf `scale` in a normalization layer (RMSNorm/Gemma convention)")
        return _Opinion(Kind.SCALE, WEAK_GRAPH, "leaf `scale`: a learned gain (norm gain or layer scale)")
    return None


def _name_opinions(record: VariableRecord) -> Iterable[_Opinion]:
    candidates = []
    if record.layer_class and not record.layer_builtin:
        candidates.append((record.layer_class, CLASS_NAME, "class"))
    if record.layer:
        candidates.append((record.layer, LAYER_NAME, "layer name"))
    if not record.trainable:
        return  # "batch_norm" in a layer name says nothing about its moving statistics
    for name, strength, label in candidates:
        for kind, what in _name_token_matches(name):
            if kind is Kind.EMBEDDING and (record.ndim < 2 or not _table_shaped(record)):
                continue  # a (kh, kw, in, out) filter in ``patch_embedding`` is a conv kernel, no table
            if kind in (Kind.NORM, Kind.SCALE) and record.ndim > 1 and not _is_broadcast_vector(record):
                continue
            yield _Opinion(kind, strength, f"{label} {name!r} names a {what} layer")
            break


def _is_broadcast_vector(record: VariableRecord) -> bool:
    """(1, 1, C)-shaped gains are vectors in disguise (timm #2712's reg_token trap, inverted)."""
    return sum(1 for d in record.shape if d not in (1, None)) <= 1


def _sibling_bias_opinion(record: VariableRecord, siblings: Iterable[VariableRecord]) -> _Opinion | None:
    """An n-D variable shaped like the trailing (output) axes of a sibling kernel is its bias.

    EinsumDense ``abc,cde->abde`` (keras_hub/Keras MultiHeadAttention query/key/value) has a
    (in, heads, head_dim) kernel and a (heads, head_dim) bias: whatever the class, a tensor that
    matches the output axes of a higher-rank kernel beside it is added to that output.
    """
    if record.ndim < 2 or _is_broadcast_vector(record):
        return None
    for other in siblings:
        if other is not record and other.ndim > record.ndim and tuple(other.shape[-record.ndim :]) == record.shape:
            return _Opinion(
                Kind.BIAS,
                SIBLING_SHAPE,
                f"shape {list(record.shape)} equals the output axes of the {list(other.shape)} "
                f"`{other.leaf}` beside it: an offset added to that kernel's output",
            )
    return None


def _shape_opinion(record: VariableRecord, siblings: Iterable[VariableRecord]) -> _Opinion | None:
    if record.ndim == 0 and record.trainable:
        return _Opinion(
            Kind.SCALE,
            SHAPE,
            "a trainable scalar: a gain-like parameter (temperature, logit scale, gate); no weight matrix is 0-D",
        )
    if record.ndim == 3 and record.shape[:2] == (1, 1) and (record.shape[2] or 0) > 1 and record.trainable:
        return _Opinion(
            Kind.EMBEDDING,
            SHAPE,
            f"shape {list(record.shape)}: one learned token of the model's width (cls/register/mask "
            "tokens are (1, 1, width), concatenated to a (batch, sequence, width) input)",
        )
    if record.ndim >= 2 and not _is_broadcast_vector(record):
        return _matrix_opinion(tuple(record.shape))
    if record.ndim == 1:
        width = record.shape[0]
        for other in siblings:
            if other is not record and other.ndim >= 2 and other.shape[-1] == width:
                return _bias_beside_opinion(width, tuple(other.shape), other.leaf)
        return _Opinion(Kind.OTHER, SHAPE, f"1-D shape {list(record.shape)} with no matching kernel")
    return None


# Cached, as _class_role is: many variables share a shape, and equal opinions that are one
# object let _resolved's cache compare them at once.


@functools.lru_cache(maxsize=4096)
def _matrix_opinion(shape: tuple[int | None, ...]) -> _Opinion:
    return _Opinion(Kind.KERNEL, SHAPE, f"shape {list(shape)}: a matrix or filter")


@functools.lru_cache(maxsize=4096)
def _bias_beside_opinion(width: int | None, kernel_shape: tuple[int | None, ...], kernel_leaf: str) -> _Opinion:
    return _Opinion(
        Kind.BIAS,
        SHAPE,
        f"1-D of width {width} beside the {list(kernel_shape)} `{kernel_leaf}` of the same layer",
    )


def classify_record(record: VariableRecord, siblings: Iterable[VariableRecord] = ()) -> Classification:
    opinions: list[_Opinion] = []
    role = _role_opinion(record)
    if role:
        opinions.append(role)
    opinions.extend(_graph_opinions(record))
    library = _library_opinion(record)
    if library:
        opinions.append(library)
    table = _table_opinion(record)
    if table:
        opinions.append(table)
    leaf = _leaf_opinion(record)
    if leaf:
        opinions.append(leaf)
    opinions.extend(_name_opinions(record))
    if not record.trainable:
        opinions.append(_Opinion(Kind.STATISTIC, STATE, "not trainable"))
    siblings = list(siblings)
    sibling_bias = _sibling_bias_opinion(record, siblings)
    if sibling_bias:
        opinions.append(sibling_bias)
    shape = _shape_opinion(record, siblings)
    if shape:
        opinions.append(shape)
    if not record.leaf_known:
        opinions.append(
            _Opinion(
                Kind.OTHER,
                0.0,
                f"leaf name unknown: variable {record.leaf[4:]} of its layer "
                f"(class {record.layer_class or 'unknown'} not in the table)",
            )
        )
    return _resolve(record, opinions)


def _weakness(opinion: _Opinion) -> float:
    return -opinion.strength


def _resolve(record: VariableRecord, opinions: list[_Opinion]) -> Classification:
    return _resolved(record.trainable, tuple(opinions))


@functools.lru_cache(maxsize=4096)
def _resolved(trainable: bool, opinions: tuple[_Opinion, ...]) -> Classification:
    """The classification the opinions make. Cached: the variables of a repeated layer (3,000
    parallel Dense) hear the same opinions, and a Classification is immutable."""
    if not opinions:
        return Classification(Kind.OTHER, Confidence.LOW, ("no evidence",))
    totals: dict[Kind, tuple[float, float]] = {}
    for opinion in opinions:
        best, total = totals.get(opinion.kind, (0.0, 0.0))
        totals[opinion.kind] = (max(best, opinion.strength), total + opinion.strength)
    kind = max(totals, key=lambda k: totals[k])
    top = totals[kind][0]
    if top <= SHAPE and kind is Kind.OTHER and not trainable:
        kind = Kind.STATISTIC
    strongest_first = sorted(opinions, key=_weakness) if len(opinions) > 1 else opinions
    evidence = tuple([o.reason for o in strongest_first if o.kind is kind])
    conflicts = tuple(
        [
            f"{o.reason} (suggests {o.kind.value})"
            for o in strongest_first
            if o.kind is not kind and o.strength >= CONFLICT_THRESHOLD
        ]
    )
    if top >= ROLE:
        confidence = Confidence.HIGH
    elif top >= LAYER_NAME:
        confidence = Confidence.MEDIUM
    else:
        confidence = Confidence.LOW
    if not trainable and kind is not Kind.STATISTIC:
        evidence = evidence + ("not trainable (frozen)",)
    return Classification(kind, confidence, evidence or ("no evidence",), conflicts)


def classify(records: Iterable[VariableRecord]) -> list[Classification]:
    """Classify all records; siblings (same owning layer) inform the shape rule."""
    records = list(records)
    layers = [(record.layer, record.path.rsplit("/", 1)[0]) for record in records]
    by_layer: dict[tuple[str | None, str], list[VariableRecord]] = {}
    for record, layer in zip(records, layers):
        by_layer.setdefault(layer, []).append(record)
    return [classify_record(record, by_layer[layer]) for record, layer in zip(records, layers)]
