"""What decay-audit knows about Keras' own layer classes, without importing Keras.

A ``.keras`` file stores a layer's variables by position (``layers/<name>/vars/<i>``),
in the order ``layer._trainable_variables + layer._non_trainable_variables``.
Turning ``vars/0`` into ``kernel`` therefore needs each class's creation order and
the config flags that skip a variable (``use_bias=False``, ``center=False``).
This table holds that order for Keras 3.15. ``tests/test_keras_layers.py`` builds
every entry with the installed Keras and compares, so a Keras upgrade that
reorders or renames a variable turns CI red instead of silently mislabelling.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from decay_audit.kinds import Kind

Config = Mapping[str, object]
Shape = tuple[int | None, ...]


def _flag(key: str, default: bool = True) -> Callable[[Config], bool]:
    def present(config: Config) -> bool:
        return bool(config.get(key, default))

    present.__name__ = f"config[{key!r}]"
    return present


def _truthy(key: str) -> Callable[[Config], bool]:
    """For options such as EinsumDense ``bias_axes`` (None or a string of axes)."""

    def present(config: Config) -> bool:
        return bool(config.get(key))

    present.__name__ = f"config[{key!r}]"
    return present


@dataclass(frozen=True)
class VariableSlot:
    """One variable a layer class may create, in creation order."""

    leaf: str
    """``variable.name`` in Keras 3 (the leaf of ``variable.path``)."""
    kind: Kind
    """The role of this variable in its layer."""
    role: str
    """Why the kind follows from the role, in words a report can show."""
    present: Callable[[Config], bool] | None = None
    """Config test that decides whether the layer creates it; None = always."""
    trainable: bool = True
    """False for state the optimizer never touches (moving statistics)."""
    stored: bool = True
    """False for a variable ``keras.saving.load_model`` creates that the file holds no value for:
    LoRA factors, which Keras merges into the kernel on save and recreates from ``lora_rank``."""
    dtype: str | None = None
    """The dtype Keras gives the variable whatever the dtype policy (int8 for a quantized kernel,
    float32 for LoRA factors); None: the policy's variable dtype."""
    shape: Callable[[Mapping[str, Shape], Config], Shape] | None = None
    """For a variable the file does not store: its shape, from the stored variables' shapes
    (by leaf) and the layer config."""
    shared_from: str | None = None
    """The attribute holding the sublayer that owns this variable, for a layer that takes another
    layer's variable as its own (SpectralNormalization's ``self.kernel = self.layer.kernel``). The
    file saves it twice, under both layers; ``model.weights`` lists it once, at this position, under
    the sublayer's path and with the sublayer's trainability."""
    shared_leaves: tuple[str, ...] = ()
    """The sublayer variables it may be, in the order the layer's ``build`` tries them."""


def _kernel(leaf: str = "kernel", role: str = "kernel, which multiplies the layer input") -> VariableSlot:
    return VariableSlot(leaf, Kind.KERNEL, role)


_BIAS = VariableSlot("bias", Kind.BIAS, "bias, added to the layer output", _flag("use_bias"))
_GAMMA = VariableSlot("gamma", Kind.NORM, "normalization gain", _flag("scale"))
_BETA = VariableSlot("beta", Kind.NORM, "normalization offset", _flag("center"))
_RECURRENT = _kernel("recurrent_kernel", "recurrent kernel, which multiplies the recurrent state")

_DENSE_LIKE = (_kernel(), _BIAS)
_RNN_CELL = (_kernel(), _RECURRENT, _BIAS)

LAYER_VARIABLES: dict[str, tuple[VariableSlot, ...]] = {
    "Dense": _DENSE_LIKE,
    "EinsumDense": (
        _kernel(),
        VariableSlot("bias", Kind.BIAS, "bias, added to the layer output", _truthy("bias_axes")),
    ),
    **{
        name: _DENSE_LIKE
        for name in (
            "Conv1D",
            "Conv2D",
            "Conv3D",
            "Conv1DTranspose",
            "Conv2DTranspose",
            "Conv3DTranspose",
            "Convolution1D",
            "Convolution2D",
            "Convolution3D",
            "Convolution1DTranspose",
            "Convolution2DTranspose",
            "Convolution3DTranspose",
            "DepthwiseConv1D",
            "DepthwiseConv2D",
        )
    },
    **{
        name: (
            _kernel("depthwise_kernel", "per-channel spatial filter (kernel)"),
            _kernel("pointwise_kernel", "1x1 channel-mixing filter (kernel)"),
            _BIAS,
        )
        for name in ("SeparableConv1D", "SeparableConv2D", "SeparableConvolution1D", "SeparableConvolution2D")
    },
    **{name: _RNN_CELL for name in ("LSTMCell", "GRUCell", "SimpleRNNCell", "ConvLSTMCell")},
    "Embedding": (VariableSlot("embeddings", Kind.EMBEDDING, "lookup table indexed by ids"),),
    "ReversibleEmbedding": (
        VariableSlot("embeddings", Kind.EMBEDDING, "lookup table indexed by ids"),
        VariableSlot(
            "reverse_embeddings",
            Kind.KERNEL,
            "untied output projection to the vocabulary",
            lambda config: not config.get("tie_weights", True),
        ),
    ),
    "BatchNormalization": (
        _GAMMA,
        _BETA,
        VariableSlot("moving_mean", Kind.STATISTIC, "running mean, updated by the forward pass", trainable=False),
        VariableSlot(
            "moving_variance", Kind.STATISTIC, "running variance, updated by the forward pass", trainable=False
        ),
    ),
    "LayerNormalization": (
        _GAMMA,
        VariableSlot(
            "beta",
            Kind.NORM,
            "normalization offset",
            lambda config: bool(config.get("center", True)) and not config.get("rms_scaling", False),
        ),
    ),
    "GroupNormalization": (_GAMMA, _BETA),
    "RMSNormalization": (VariableSlot("scale", Kind.NORM, "RMS normalization gain"),),
    "PReLU": (VariableSlot("alpha", Kind.SCALE, "learned slope of the negative part (PReLU)"),),
    "Attention": (
        VariableSlot("scale", Kind.SCALE, "learned attention temperature", _flag("use_scale", False)),
        VariableSlot(
            "concat_score_weight",
            Kind.SCALE,
            "weight of the concat score",
            lambda config: config.get("score_mode") == "concat",
        ),
    ),
    "AdditiveAttention": (VariableSlot("scale", Kind.SCALE, "learned attention scale", _flag("use_scale", True)),),
    "SpectralNormalization": (
        VariableSlot(
            "kernel",
            Kind.KERNEL,
            "wrapped layer's kernel (or embedding table), which the wrapper rescales before each call",
            shared_from="layer",
            shared_leaves=("kernel", "embeddings"),
        ),
        VariableSlot(
            "vector_u",
            Kind.STATISTIC,
            "power-iteration estimate of the kernel's leading singular vector, updated by the forward pass",
            trainable=False,
        ),
    ),
    "Normalization": (
        VariableSlot("mean", Kind.STATISTIC, "adapted input mean", trainable=False),
        VariableSlot("variance", Kind.STATISTIC, "adapted input variance", trainable=False),
        VariableSlot("count", Kind.STATISTIC, "adapt() sample counter", trainable=False),
    ),
}
"""Class name → variables in save order. Classes without variables are absent."""

SUBLAYER_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "MultiHeadAttention": ("query_dense", "key_dense", "value_dense", "output_dense"),
    # Keras 3.15 exports GroupedQueryAttention as GroupQueryAttention: config.json says the export
    # name, while a weights-only file keys the layer by the class's own (``grouped_query_attention``).
    **{
        name: ("query_dense", "key_dense", "value_dense", "output_dense")
        for name in ("GroupQueryAttention", "GroupedQueryAttention")
    },
    "LSTM": ("cell",),
    "GRU": ("cell",),
    "SimpleRNN": ("cell",),
    "RNN": ("cell",),
    "ConvLSTM1D": ("cell",),
    "ConvLSTM2D": ("cell",),
    "ConvLSTM3D": ("cell",),
    "Bidirectional": ("forward_layer", "backward_layer"),
    "TimeDistributed": ("layer",),
}
"""Keras container layers and the attributes their sublayers are saved under."""

SUBLAYER_CLASS_BY_PARENT: dict[tuple[str, str], str] = {
    ("MultiHeadAttention", "query_dense"): "EinsumDense",
    ("MultiHeadAttention", "key_dense"): "EinsumDense",
    ("MultiHeadAttention", "value_dense"): "EinsumDense",
    ("MultiHeadAttention", "output_dense"): "EinsumDense",
    **{
        (name, attr): "EinsumDense"
        for name in ("GroupQueryAttention", "GroupedQueryAttention")
        for attr in ("query_dense", "key_dense", "value_dense", "output_dense")
    },
    ("LSTM", "cell"): "LSTMCell",
    ("GRU", "cell"): "GRUCell",
    ("SimpleRNN", "cell"): "SimpleRNNCell",
    ("ConvLSTM1D", "cell"): "ConvLSTMCell",
    ("ConvLSTM2D", "cell"): "ConvLSTMCell",
    ("ConvLSTM3D", "cell"): "ConvLSTMCell",
}
"""Sublayers whose class is fixed by the parent and absent from config.json."""

SUBLAYER_CONFIG_BY_PARENT: dict[tuple[str, str], Callable[[Config], Config]] = {
    # MHA's EinsumDense sublayers all carry a bias iff the parent's use_bias.
    **{
        ("MultiHeadAttention", attr): (lambda c: {"bias_axes": "x" if c.get("use_bias", True) else None})
        for attr in ("query_dense", "key_dense", "value_dense", "output_dense")
    },
    **{
        (name, attr): (lambda c: {"bias_axes": "x" if c.get("use_bias", True) else None})
        for name in ("GroupQueryAttention", "GroupedQueryAttention")
        for attr in ("query_dense", "key_dense", "value_dense", "output_dense")
    },
}

NON_SCOPING_CONTAINERS = frozenset({"Functional", "Bidirectional", "TimeDistributed", "SpectralNormalization"})
"""Containers whose sublayers' variable paths do not start with the container's name
once the model is rebuilt by ``keras.saving.load_model`` (observed on Keras 3.15:
``forward_gru/gru_cell/kernel``, not ``bidirectional/forward_gru/...``). A Sequential
scopes unless its first layer is an InputLayer (then it is built as a Functional at
construction, outside any name scope). The wrappers are listed for readers without a config;
with one, any Keras layer whose config holds a ``layer`` entry is a ``keras.layers.Wrapper``
(see :func:`wraps_a_layer`)."""


def wraps_a_layer(config: Config) -> bool:
    """Whether a Keras layer config is a ``keras.layers.Wrapper``'s: ``Wrapper.get_config`` writes
    the wrapped layer under ``layer``. Keras 3.15 ``Wrapper.build`` builds it by calling
    ``self.layer.build`` directly, not through ``__call__``, so when ``load_model`` builds the
    wrapper from its build config, outside any name scope, the wrapped layer's variables get no
    wrapper prefix (``sn_conv/kernel``, not ``sn/sn_conv/kernel``)."""
    inner = config.get("layer")
    return isinstance(inner, Mapping) and isinstance(inner.get("class_name"), str)


def keras_class_name_candidates(h5_key: str) -> list[str]:
    """Keras classes whose auto-generated layer names look like ``h5_key``.

    Keras names unnamed layers (and keys the h5 groups of ``layers`` lists) by
    the snake_case of the class plus ``_N``: ``batch_normalization_3``, ``conv2d``.
    When no config says the class (subclassed models), this is the best evidence left.
    """
    return list(_classes_by_snake_case().get(re.sub(r"_\d+$", "", h5_key), ()))


@functools.lru_cache(maxsize=1)
def _classes_by_snake_case() -> dict[str, tuple[str, ...]]:
    """snake_case name → known classes, built once (a weights-only file asks once per layer key)."""
    known = list(LAYER_VARIABLES) + [name for name in SUBLAYER_ATTRIBUTES if name not in LAYER_VARIABLES]
    index: dict[str, list[str]] = {}
    for name in known:
        index.setdefault(snake_case(name), []).append(name)
    return {key: tuple(names) for key, names in index.items()}


@functools.lru_cache(maxsize=4096)
def snake_case(class_name: str) -> str:
    """Keras' ``to_snake_case`` (keras/src/utils/naming.py), e.g. PReLU → p_re_lu."""
    intermediate = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", intermediate).lower()


def slots_for(class_name: str, config: Config | None) -> tuple[VariableSlot, ...] | None:
    """The variables a layer of this class and config creates, in save order.

    None when the class is not known here. Trainable slots come first because
    Keras saves ``_trainable_variables + _non_trainable_variables``.
    """
    slots = LAYER_VARIABLES.get(class_name)
    if slots is None:
        return None
    config = config or {}
    present = [slot for slot in slots if slot.present is None or slot.present(config)]
    return tuple([s for s in present if s.trainable] + [s for s in present if not s.trainable])


def slots_for_count(class_name: str, count: int) -> tuple[VariableSlot, ...] | None:
    """Slots of a class whose config is unknown (weights-only files), chosen by how many variables it saved.

    The answer is given only when every combination of optional variables with ``count``
    variables agrees on the leaves (Conv with one variable: the kernel; BatchNormalization
    with three: ambiguous, so None).
    """
    slots = LAYER_VARIABLES.get(class_name)
    if slots is None:
        return None
    return slots_fitting_count(slots, [slot.present is not None for slot in slots], count)


def slots_fitting_count(
    slots: Sequence[VariableSlot],
    optional: Sequence[bool],
    count: int,
    decided: Sequence[bool | None] | None = None,
    declared_ranks: Sequence[int | None] | None = None,
    saved_ranks: tuple[int, ...] | None = None,
) -> tuple[VariableSlot, ...] | None:
    """The one leaf sequence, in save order, that leaves ``count`` variables, or None if unsure.

    Every subset of the optional slots is tried. Where a model's config decides some of them
    (``decided``: keep True, drop False, unknown None), only agreeing subsets count, unless none
    agree; among several that fit, those whose declared ranks (literal ``shape=`` tuples) match
    the saved shapes. Leaves, not slots, are compared: keras_hub classes may create one leaf in
    two branches. Over 12 optional slots the search would be too large to be worth it: None.
    """
    positions = [i for i, flag in enumerate(optional) if flag]
    if len(positions) > 12:
        return None
    fitting: list[list[int]] = []
    for size in range(len(positions) + 1):
        for chosen in itertools.combinations(positions, size):
            present = [i for i in range(len(slots)) if not optional[i] or i in chosen]
            ordered = [i for i in present if slots[i].trainable] + [i for i in present if not slots[i].trainable]
            if len(ordered) == count:
                fitting.append(ordered)
    if decided:
        agreeing = [o for o in fitting if all(decided[i] is None or decided[i] == (i in o) for i in positions)]
        fitting = agreeing or fitting
    if len(fitting) > 1 and declared_ranks and saved_ranks:
        ranked = [o for o in fitting if all(declared_ranks[i] in (None, r) for i, r in zip(o, saved_ranks))]
        fitting = ranked or fitting
    leaves = {tuple(slots[i].leaf for i in o) for o in fitting}
    return tuple(slots[i] for i in fitting[0]) if len(leaves) == 1 else None


# -- quantized and LoRA layers ---------------------------------------------------------------
#
# ``model.quantize(mode)`` and LoRA (``lora_rank`` / ``enable_lora``) change which variables a
# core layer holds, their trainability, and their order, and the file no longer stores them in
# ``model.weights`` order: such layers save through ``variable_serialization_spec`` (Keras 3.15
# dense.py, einsum_dense.py, embedding.py, reversible_embedding.py), while ``load_model`` builds
# them anew from the config, where ``model.weights`` lists the variables created trainable first,
# then the rest, each group in creation order. Enabling LoRA afterwards only flips the base
# kernel's ``trainable``; it keeps its place.

QUANTIZATION_MODES = ("int8", "float8", "int4", "gptq", "awq")
"""keras/src/dtype_policies/dtype_policy.py QUANTIZATION_MODES."""

UNKNOWN_MODE = "?"
"""A dtype policy decay-audit cannot read (a DTypePolicyMap, a quantized class without its mode)."""

_MODELLED_MODES = frozenset({"int8", "int4", "float8"})


@dataclass(frozen=True)
class LayerVariables:
    """One layer's variables as its file stores them and as ``load_model`` rebuilds them."""

    stored: tuple[VariableSlot, ...]
    """``vars/<i>`` of the weights file, in index order."""
    loaded: tuple[VariableSlot, ...]
    """The layer's variables in ``model.weights`` order after ``keras.saving.load_model``, with
    the trainability the loaded model gives them; includes variables with ``stored=False``."""


def quantization_mode(config: Config) -> str | None:
    """The quantization mode the layer's dtype policy names (``int8``, ``int4/128``, ``float8``),
    None for a float policy, UNKNOWN_MODE where the policy cannot be read.

    Keras 3.15 serialises ``{"class_name": "QuantizedDTypePolicy", "config": {"mode": "int8",
    "source_name": "float32"}}``; earlier 3.x wrote ``{"config": {"name": "int8_from_float32"}}``
    or the bare string, which ``dtype_policies.get`` still reads.
    """
    policy = config.get("dtype")
    class_name = None
    name: object = policy
    if isinstance(policy, Mapping):
        class_name = policy.get("class_name")
        inner = policy.get("config")
        inner = inner if isinstance(inner, Mapping) else {}
        mode = inner.get("mode")
        if isinstance(mode, str):
            return mode if mode.startswith(QUANTIZATION_MODES) else UNKNOWN_MODE
        name = inner.get("name")
    if isinstance(name, str) and name.startswith(QUANTIZATION_MODES):
        return name.split("_from_")[0] if "_from_" in name else UNKNOWN_MODE
    if isinstance(class_name, str) and (class_name == "DTypePolicyMap" or "Quantized" in class_name):
        return UNKNOWN_MODE
    if (
        isinstance(class_name, str)
        and class_name.endswith("DTypePolicy")
        and class_name
        not in (
            "DTypePolicy",
            "FloatDTypePolicy",
        )
    ):
        return UNKNOWN_MODE  # Int4DTypePolicy, GPTQDTypePolicy, ... without a readable mode
    return None


def _int4_grouped(config: Config, mode: str) -> bool:
    """Sub-channel int4 (a zero point and a group index beside the scale) or per-channel.

    Keras takes the block size from the layer's ``quantization_config`` first, then from the
    policy's ``int4/<block_size>`` (quantizers/quantization_config.py get_block_size_for_layer);
    None or -1 mean per-channel. Int4QuantizationConfig defaults to 128.
    """
    block: object = None
    quantization = config.get("quantization_config")
    if isinstance(quantization, Mapping) and quantization.get("class_name") == "Int4QuantizationConfig":
        inner = quantization.get("config")
        block = inner.get("block_size", 128) if isinstance(inner, Mapping) else 128
    elif "/" in mode:
        text = mode.partition("/")[2]
        block = int(text) if text.lstrip("-").isdigit() else None
    return isinstance(block, int) and not isinstance(block, bool) and block > 0


_INT_ROLE = "quantized to int8 storage by quantize(), so the optimizer cannot update it"
_SCALE = "scale of the quantized {of}, fixed by quantize()"
_ZERO = "zero point of the int4 {of}'s groups, fixed by quantize()"
_FLOAT8_ROLE = (
    "float8 delayed-scaling state: created trainable with overwrite_with_gradient=True, so "
    "BaseOptimizer.apply overwrites it with its gradient and takes it out before weight decay"
)
_FLOAT8_LEAVES = (
    "inputs_scale",
    "inputs_amax_history",
    "kernel_scale",
    "kernel_amax_history",
    "outputs_grad_scale",
    "outputs_grad_amax_history",
)


def _frozen(slot: VariableSlot, role: str, dtype: str | None = "int8") -> VariableSlot:
    return dataclasses.replace(slot, role=f"{slot.role}, {role}", trainable=False, dtype=dtype)


def _state(leaf: str, role: str, dtype: str | None = None) -> VariableSlot:
    return VariableSlot(leaf, Kind.STATISTIC, role, trainable=False, dtype=dtype)


def _einsum_kernel_shape(stored: Mapping[str, Shape], config: Config) -> Shape:
    """The float kernel shape of an EinsumDense: as stored, except int4, which stores it flattened
    to (reduced rows, ceil(columns / 2)). The equation's kernel letters then say each dimension:
    a kept letter from the config's ``output_shape`` (aligned to the end of the output spec, as
    Keras aligns it), or the scale's last axis where one letter is kept; the reduced letter from
    the packed kernel's rows where one letter is reduced; None where neither tells."""
    kernel = stored.get("kernel", ())
    mode = quantization_mode(config) or ""
    if not mode.startswith("int4"):
        return kernel
    equation = config.get("equation")
    if not isinstance(equation, str) or "->" not in equation or "," not in equation:
        return (None, None)
    inputs, _, output = equation.partition("->")
    letters = inputs.partition(",")[2].strip()
    output = output.strip()
    reduced = [c for c in letters if c not in output]
    kept = [c for c in letters if c in output]
    partial = config.get("output_shape")
    partial_dims = [partial] if isinstance(partial, int) else list(partial) if isinstance(partial, list | tuple) else []
    from_output = dict(zip(output[len(output) - len(partial_dims) :], partial_dims)) if partial_dims else {}
    rows = kernel[0] if kernel else None
    scale = stored.get("kernel_scale", ())
    columns = scale[-1] if scale else None

    def dim(letter: str) -> int | None:
        if letter in reduced:
            return rows if len(reduced) == 1 else None
        value = from_output.get(letter)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return columns if len(kept) == 1 else None

    return tuple(dim(c) for c in letters)


def _rank(config: Config) -> int | None:
    rank = config.get("lora_rank")
    return rank if isinstance(rank, int) and not isinstance(rank, bool) and rank > 0 else None


def _dim(config: Config, key: str) -> int | None:
    value = config.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_LORA_KERNEL_ROLE = (
    "LoRA factor of the kernel's low-rank update (kernel + a @ b): a weight matrix multiplying "
    "the layer input, decayed as the kernel it adapts would be"
)
_LORA_EMBEDDING_ROLE = (
    "LoRA factor of the embedding table's low-rank update (table + a @ b): the ids pick rows of "
    "lora_embeddings_a, so the pair is an update of a lookup table, treated as the table it adapts"
)


def _lora_slots(class_name: str) -> tuple[str, tuple[VariableSlot, VariableSlot]]:
    """The base variable LoRA freezes and the two factors ``enable_lora`` adds, with their shapes."""
    if class_name in ("Embedding", "ReversibleEmbedding"):
        return "embeddings", (
            VariableSlot(
                "lora_embeddings_a",
                Kind.EMBEDDING,
                _LORA_EMBEDDING_ROLE,
                stored=False,
                dtype="float32",
                shape=lambda stored, config: (_dim(config, "input_dim"), _rank(config)),
            ),
            VariableSlot(
                "lora_embeddings_b",
                Kind.EMBEDDING,
                _LORA_EMBEDDING_ROLE,
                stored=False,
                dtype="float32",
                shape=lambda stored, config: (_rank(config), _dim(config, "output_dim")),
            ),
        )
    if class_name == "Dense":
        first: Callable[[Mapping[str, Shape], Config], Shape] = lambda stored, config: (  # noqa: E731
            (stored.get("kernel") or (None,))[0],
            _rank(config),
        )
        second: Callable[[Mapping[str, Shape], Config], Shape] = lambda stored, config: (  # noqa: E731
            _rank(config),
            _dim(config, "units"),
        )
    else:
        first = lambda stored, config: _einsum_kernel_shape(stored, config)[:-1] + (_rank(config),)  # noqa: E731
        second = lambda stored, config: (_rank(config),) + _einsum_kernel_shape(stored, config)[-1:]  # noqa: E731
    return "kernel", (
        VariableSlot("lora_kernel_a", Kind.KERNEL, _LORA_KERNEL_ROLE, stored=False, dtype="float32", shape=first),
        VariableSlot("lora_kernel_b", Kind.KERNEL, _LORA_KERNEL_ROLE, stored=False, dtype="float32", shape=second),
    )


def _dense_build(
    class_name: str, config: Config, mode: str | None
) -> tuple[list[tuple[VariableSlot, bool]], list[str]] | None:
    """Dense/EinsumDense: (variables in creation order, each with its trainability at creation),
    and the leaves in ``variable_serialization_spec`` order."""
    kernel, bias = LAYER_VARIABLES[class_name]
    with_bias = bias.present is None or bias.present(config)
    tail = [(bias, True)] if with_bias else []
    base = (mode or "").partition("/")[0]
    if base == "":
        return [(kernel, True)] + tail, ["kernel", "bias"]
    if base == "int8":
        created = [(_frozen(kernel, _INT_ROLE), False), (_state("kernel_scale", _SCALE.format(of="kernel")), False)]
        return created + tail, ["kernel", "bias", "kernel_scale"]
    if base == "int4":
        created = [
            (_frozen(kernel, "packed two int4 values a byte by quantize(), so the optimizer cannot update it"), False),
            (_state("kernel_scale", _SCALE.format(of="kernel")), False),
        ]
        if _int4_grouped(config, mode or ""):
            created += [
                (_state("kernel_zero", _ZERO.format(of="kernel"), "int8"), False),
                (_state("g_idx", "group index of each kernel row, fixed by quantize()", "float32"), False),
            ]
        return created + tail, ["kernel", "bias", "kernel_scale", "kernel_zero", "g_idx"]
    if base == "float8":
        scales = [(VariableSlot(leaf, Kind.STATISTIC, _FLOAT8_ROLE, dtype="float32"), True) for leaf in _FLOAT8_LEAVES]
        return scales + [(kernel, True)] + tail, ["kernel", "bias", *_FLOAT8_LEAVES]
    return None


def _embedding_build(
    class_name: str, config: Config, mode: str | None
) -> tuple[list[tuple[VariableSlot, bool]], list[str]] | None:
    """Embedding/ReversibleEmbedding, as _dense_build. Embedding has no float8 mode."""
    slots = LAYER_VARIABLES[class_name]
    table = slots[0]
    untied = class_name == "ReversibleEmbedding" and not config.get("tie_weights", True)
    reverse = slots[1] if untied else None
    base = (mode or "").partition("/")[0]
    if base == "":
        created = [(table, True)] + ([(reverse, True)] if reverse else [])
        return created, [s.leaf for s, _ in created]
    if base not in ("int8", "int4"):
        return None
    grouped = base == "int4" and _int4_grouped(config, mode or "")
    created = [
        (_frozen(table, _INT_ROLE), False),
        (_state("embeddings_scale", _SCALE.format(of="table")), False),
    ]
    if grouped:
        created += [
            (_state("embeddings_zero", _ZERO.format(of="table"), "int8"), False),
            (_state("g_idx", "group index of each embedding column, fixed by quantize()", "float32"), False),
        ]
    if reverse is not None:
        created += [
            (_frozen(reverse, _INT_ROLE), False),
            (_state("reverse_embeddings_scale", _SCALE.format(of="output projection")), False),
        ]
        if grouped:
            created.append((_state("reverse_embeddings_zero", _ZERO.format(of="output projection")), False))
    spec = ["embeddings", "embeddings_scale"] + (["embeddings_zero", "g_idx"] if base == "int4" else [])
    if reverse is not None:
        spec += ["reverse_embeddings", "reverse_embeddings_scale"] + (
            ["reverse_embeddings_zero"] if base == "int4" else []
        )
    return created, spec


_ADAPTABLE: dict[str, Callable[[str, Config, str | None], tuple[list[tuple[VariableSlot, bool]], list[str]] | None]] = {
    "Dense": _dense_build,
    "EinsumDense": _dense_build,
    "Embedding": _embedding_build,
    "ReversibleEmbedding": _embedding_build,
}
"""Keras classes whose variables ``quantize`` and LoRA change (Keras 3.15)."""

ADAPTABLE_CLASSES = frozenset(_ADAPTABLE)


def layer_variables(class_name: str, config: Config | None) -> LayerVariables | None:
    """The variables of a Keras layer of this class and config, as stored and as loaded.

    None when the class is unknown, or quantized in a mode this table does not model (GPTQ, AWQ,
    an unreadable policy): a reader then keeps positions rather than guess names.
    """
    config = config or {}
    if class_name not in _ADAPTABLE:
        slots = slots_for(class_name, config)
        return LayerVariables(slots, slots) if slots is not None else None
    mode = quantization_mode(config)
    if mode is not None and mode.partition("/")[0] not in _MODELLED_MODES:
        return None
    built = _ADAPTABLE[class_name](class_name, config, mode)
    if built is None:
        return None
    created, spec = built
    if _rank(config) is not None:
        base, factors = _lora_slots(class_name)
        created = [
            (
                dataclasses.replace(
                    slot,
                    trainable=False,
                    role=f"{slot.role}, frozen by LoRA (lora_rank): the optimizer trains its LoRA factors instead",
                )
                if slot.leaf == base
                else slot,
                at_creation,
            )
            for slot, at_creation in created
        ]
        created += [(factor, True) for factor in factors]
    by_leaf = {slot.leaf: slot for slot, _ in created}
    stored = tuple(by_leaf[leaf] for leaf in spec if leaf in by_leaf and by_leaf[leaf].stored)
    loaded = tuple([s for s, t in created if t] + [s for s, t in created if not t])
    return LayerVariables(stored, loaded)


@functools.lru_cache(maxsize=256)
def adapted_slot(class_name: str, leaf: str) -> VariableSlot | None:
    """The role of a variable that quantization or LoRA adds to a Keras class (``kernel_scale``,
    ``lora_kernel_a``), for readers that know the leaf but not the config (a live model)."""
    build = _ADAPTABLE.get(class_name)
    if build is None:
        return None
    configs: list[Config] = [
        {"dtype": mode, "lora_rank": 1, "use_bias": True, "bias_axes": "x", "tie_weights": False}
        for mode in ("float8_from_float32", "int8_from_float32", "int4/128_from_float32")
    ]
    for config in configs:
        found = layer_variables(class_name, config)
        for slot in found.loaded if found else ():
            if slot.leaf == leaf and not any(s.leaf == leaf for s in LAYER_VARIABLES[class_name]):
                return slot
    return None


def loaded_shape(slot: VariableSlot, stored: Mapping[str, Shape], config: Config) -> Shape:
    """The shape ``load_model`` gives a variable the file does not store (None dims where unknown)."""
    if slot.shape is None:
        return ()
    return slot.shape(stored, config)


def legacy_order(class_name: str, config: Config | None, leaves: Sequence[str]) -> tuple[tuple[str, bool], ...] | None:
    """A legacy ``.h5`` layer's weight names, which Keras writes as ``trainable_weights +
    non_trainable_weights``, put in the ``model.weights`` order ``load_model`` gives, each with
    the trainability it gives (a quantized kernel, a kernel LoRA freezes: False). None when the
    names are not exactly the variables this table expects for the config."""
    plan = layer_variables(class_name, config)
    if plan is None or sorted(slot.leaf for slot in plan.loaded) != sorted(leaves):
        return None
    return tuple((slot.leaf, slot.trainable) for slot in plan.loaded)
