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

import functools
import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from decay_audit.kinds import Kind

Config = Mapping[str, object]


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
    "Normalization": (
        VariableSlot("mean", Kind.STATISTIC, "adapted input mean", trainable=False),
        VariableSlot("variance", Kind.STATISTIC, "adapted input variance", trainable=False),
        VariableSlot("count", Kind.STATISTIC, "adapt() sample counter", trainable=False),
    ),
}
"""Class name → variables in save order. Classes without variables are absent."""

SUBLAYER_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "MultiHeadAttention": ("query_dense", "key_dense", "value_dense", "output_dense"),
    "GroupQueryAttention": ("query_dense", "key_dense", "value_dense", "output_dense"),
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
    ("GroupQueryAttention", "query_dense"): "EinsumDense",
    ("GroupQueryAttention", "key_dense"): "EinsumDense",
    ("GroupQueryAttention", "value_dense"): "EinsumDense",
    ("GroupQueryAttention", "output_dense"): "EinsumDense",
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
        ("GroupQueryAttention", attr): (lambda c: {"bias_axes": "x" if c.get("use_bias", True) else None})
        for attr in ("query_dense", "key_dense", "value_dense", "output_dense")
    },
}

NON_SCOPING_CONTAINERS = frozenset({"Functional", "Bidirectional", "TimeDistributed"})
"""Containers whose sublayers' variable paths do not start with the container's name
once the model is rebuilt by ``keras.saving.load_model`` (observed on Keras 3.15:
``forward_gru/gru_cell/kernel``, not ``bidirectional/forward_gru/...``). A Sequential
scopes unless its first layer is an InputLayer (then it is built as a Functional at
construction, outside any name scope)."""


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
