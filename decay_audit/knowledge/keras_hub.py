"""Look-ups over the generated keras_hub table (``_generated/keras_hub_layers.py``), without keras_hub.

The table holds, per keras_hub class, what the source says; this module answers the
walker's questions: which class a config entry or an h5 key means, which classes an
attribute may hold, and which leaves a class's saved variables have, given how many the
file holds (sublayers of keras_hub classes have no config in ``config.json``, so optional
variables are decided by count and by constant constructor arguments).
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import TypeGuard

from decay_audit.kinds import Kind
from decay_audit.knowledge.keras import (
    ADAPTABLE_CLASSES,
    LAYER_VARIABLES,
    SUBLAYER_ATTRIBUTES,
    LayerVariables,
    VariableSlot,
    layer_variables,
    quantization_mode,
    slots_fitting_count,
    slots_for,
    slots_for_count,
    snake_case,
)

__all__ = [
    "keras_hub_version",
    "HubClass",
    "hub_class",
    "class_for_entry",
    "classes_for_key",
    "hub_slots",
    "builtin_slots",
    "slot_for_hub_leaf",
    "is_hub_entry",
    "mapped_policy",
    "mapped_layer_variables",
]


@lru_cache(maxsize=1)
def _table():
    """The generated table, imported on first use: ~200 kB of literals a scan of a model made of
    Keras' own layers never needs (measured 0.1 s to compile without a .pyc)."""
    from decay_audit.knowledge._generated import keras_hub_layers

    return keras_hub_layers


def keras_hub_version() -> str:
    """The keras_hub release the table was generated from."""
    return _table().KERAS_HUB_VERSION


@dataclass(frozen=True)
class HubClass:
    """One keras_hub class, as the generated table describes it."""

    id: str
    """``module.ClassName`` in the keras_hub release the table covers."""
    name: str
    registered: str | None
    scopes: bool
    """Whether its sublayers' variable paths start with its name (False for Functional models)."""
    keras_base: str | None
    """The Keras class it extends, when that class's variables are in decay_audit.knowledge.keras."""
    variables: tuple[tuple[str, bool, str | None, str, int, bool, int | None], ...]
    """(leaf, trainable, guarding condition or None, kind, role index, created in ``__init__``, rank)."""
    sublayers: Mapping[str, tuple[str, ...]]
    lists: Mapping[str, tuple[str, ...]]
    constants: Mapping[str, Mapping[str, object]]
    created_in_init: tuple[str, ...] = ()
    """Sublayer attributes constructed in ``__init__`` (in this class's construction scope)."""
    built_in_init: tuple[str, ...] = ()
    """Sublayer attributes built in ``__init__``: their variables take the construction scope."""
    prefixes: bool = False
    """Names its layers ``f"{name}_..."`` when constructed with a name, as ``load_model`` does."""
    tracking: tuple[tuple[str, str | None], ...] = ()
    """Sublayer and list attributes in the order the source first assigns a layer to them, each
    with a regex of the layer's ``name=`` (None when it is the attribute's own name, or the source
    does not fix it). Keras tracks sublayers in assignment order, so this is ``model.weights``
    order; a Functional model lists its graph's other layers after these, and tracks nothing
    assigned after its ``super().__init__(inputs, outputs)`` (left out here)."""

    def attribute_classes(self, key: str) -> tuple[str, ...]:
        """Classes the h5 key may hold: the attribute itself, or a private attribute behind a
        public property of the same name (MultiHeadAttention's ``query_dense`` -> ``_query_dense``)."""
        return self.sublayers.get(key) or self.sublayers.get(f"_{key}") or ()

    def attribute_constants(self, key: str) -> Mapping[str, object]:
        return self.constants.get(key) or self.constants.get(f"_{key}") or {}

    def list_classes(self, key: str) -> tuple[str, ...]:
        return self.lists.get(key) or self.lists.get(f"_{key}") or ()


@cache
def hub_class(class_id: str) -> HubClass | None:
    row = _table().CLASSES.get(class_id)
    if row is None:
        return None
    return HubClass(class_id, *row)


@lru_cache(maxsize=1)
def _by_registered() -> dict[str, str]:
    return {row[1]: key for key, row in _table().CLASSES.items() if row[1]}


@lru_cache(maxsize=1)
def _by_snake() -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for key, row in _table().CLASSES.items():
        index.setdefault(snake_case(row[0]), []).append(key)
    for name in list(LAYER_VARIABLES) + list(SUBLAYER_ATTRIBUTES):
        index.setdefault(snake_case(name), []).append(name)
    return index


def is_hub_entry(entry: Mapping | None) -> TypeGuard[Mapping]:
    if not isinstance(entry, Mapping):
        return False
    module = entry.get("module")
    registered = entry.get("registered_name")
    return (isinstance(module, str) and module.startswith("keras_hub")) or (
        isinstance(registered, str) and registered.startswith("keras_hub>")
    )


def class_for_entry(entry: Mapping | None) -> str | None:
    """The table id of a config entry's keras_hub class (by module path, then registered name)."""
    if not is_hub_entry(entry):
        return None
    class_name = entry.get("class_name")
    module = entry.get("module")
    if isinstance(module, str) and isinstance(class_name, str) and f"{module}.{class_name}" in _table().CLASSES:
        return f"{module}.{class_name}"
    registered = entry.get("registered_name")
    if isinstance(registered, str) and registered in _by_registered():
        return _by_registered()[registered]
    return None


def classes_for_key(key: str, candidates: tuple[str, ...] = ()) -> list[str]:
    """Classes whose h5 key (snake_case class name, ``_N`` for repeats) is ``key``.

    ``candidates`` (what the parent's source says the list may hold) narrow the answer
    where two classes share a snake_case name (keras_hub has several ``MLP``s).
    """
    stem = re.sub(r"_\d+$", "", key)
    found = list(_by_snake().get(stem, ())) + list(_by_snake().get(key, ()))
    if candidates:
        narrowed = [c for c in candidates if c in found or snake_case(_short(c)) in (stem, key)]
        if narrowed:
            return narrowed
    return list(dict.fromkeys(found))


def _short(class_id: str) -> str:
    return class_id.rsplit(".", 1)[-1]


_COMPARE = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
}
_UNKNOWN = object()


@cache
def _parsed(condition: str):
    try:
        return ast.parse(condition, mode="eval").body
    except SyntaxError:
        return None


def _value(node, context: Mapping[str, object]):
    """``self.X`` is read from the model's config (keras_hub passes constructor arguments down
    under the same names: DINOv2's ``use_mask_token``); constants as written; anything else unknown."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
        return context.get(node.attr, _UNKNOWN)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        inner = _value(node.operand, context)
        return _UNKNOWN if inner is _UNKNOWN else not inner
    if isinstance(node, ast.BoolOp):
        values = [_value(v, context) for v in node.values]
        if isinstance(node.op, ast.And):
            if any(v is not _UNKNOWN and not v for v in values):
                return False
            return _UNKNOWN if _UNKNOWN in values else True
        if any(v is not _UNKNOWN and v for v in values):
            return True
        return _UNKNOWN if _UNKNOWN in values else False
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        left, right = _value(node.left, context), _value(node.comparators[0], context)
        if left is _UNKNOWN or right is _UNKNOWN:
            return _UNKNOWN
        try:
            return bool(_COMPARE[type(node.ops[0])](left, right))
        except TypeError:
            return _UNKNOWN
    return _UNKNOWN


def condition_holds(condition: str | None, context: Mapping[str, object] | None) -> bool | None:
    """True/False when the model's config decides a guarding condition, None when it cannot."""
    if condition is None:
        return True
    if not context or condition == "?":
        return None
    node = _parsed(condition)
    value = _value(node, context) if node is not None else _UNKNOWN
    return None if value is _UNKNOWN else bool(value)


def _slot(row: tuple, class_name: str) -> VariableSlot:
    leaf, trainable, _, kind, role = row[:5]
    # An unnamed add_weight: Keras 3.15 names it ``variable`` (``variable_N`` after others in the process).
    return VariableSlot(
        leaf or "variable",
        Kind(kind),
        f"{_table().ROLES[role]} (keras_hub {keras_hub_version()} {class_name})",
        trainable=trainable,
    )


def in_init_leaves(class_id: str) -> frozenset[str]:
    """Leaves this class creates in ``__init__`` (outside the scope it is built in)."""
    entry = hub_class(class_id)
    return frozenset(row[0] for row in entry.variables if row[5] and row[0]) if entry else frozenset()


def hub_slots(
    class_id: str, count: int, context: Mapping[str, object] | None = None, ranks: tuple[int, ...] | None = None
) -> tuple[VariableSlot, ...] | None:
    """Leaves of a keras_hub class's ``count`` saved variables, in save order, or None if unsure.

    ``context`` is the config of the keras_hub model the layer belongs to: it decides guarding
    conditions such as ``self.use_mask_token`` where the count alone cannot."""
    entry = hub_class(class_id)
    if entry is None:
        return None
    if not entry.variables and entry.keras_base:
        return slots_for_count(entry.keras_base, count)
    slots = [_slot(row, entry.name) for row in entry.variables]
    optional = [row[2] is not None for row in entry.variables]
    decided = [condition_holds(row[2], context) for row in entry.variables] if context else None
    return slots_fitting_count(slots, optional, count, decided, [row[6] for row in entry.variables], ranks)


def builtin_slots(class_name: str, constants: Mapping[str, object], count: int) -> tuple[VariableSlot, ...] | None:
    """Slots of a Keras class created by keras_hub code (no config saved): the constant constructor
    arguments where they decide, else the count."""
    slots = slots_for(class_name, constants)
    if slots is not None and len(slots) == count:
        return slots
    return slots_for_count(class_name, count)


@cache
def slot_for_hub_leaf(class_name: str, leaf: str) -> VariableSlot | None:
    """The role of ``leaf`` in keras_hub classes named ``class_name``, when they all agree
    (from the small generated roles module, so custom-class models do not load the full table)."""
    from decay_audit.knowledge._generated.keras_hub_roles import KERAS_HUB_VERSION, ROLES_BY_CLASS_NAME

    found = ROLES_BY_CLASS_NAME.get(class_name, {}).get(leaf)
    if found is None:
        return None
    kind, trainable, role = found
    return VariableSlot(leaf, Kind(kind), f"{role} (keras_hub {KERAS_HUB_VERSION} {class_name})", trainable=trainable)


# -- quantized keras_hub models -------------------------------------------------------------
#
# ``model.quantize(mode)`` on a keras_hub model changes the dtype policy of the Dense,
# EinsumDense and (Reversible)Embedding layers its code creates. Those layers have no entry in
# ``config.json``; keras_hub's ``Backbone.get_config`` saves the model's dtype policy instead, a
# ``DTypePolicyMap`` keyed by each quantized layer's ``layer.path``
# (``decoder_block_0/attention/query``), and ``load_model`` hands every layer ``map[layer.path]``
# (keras/src/layers/layer.py, Keras 3.15). So the map is the layer's config's ``dtype``.

_REGEX_SIGNS = frozenset("*+?[](){}|\\^$")

_OPTIONAL_ARGUMENTS: dict[str, tuple[str, tuple[object, ...]]] = {
    "Dense": ("use_bias", (True, False)),
    "EinsumDense": ("bias_axes", ("x", None)),
    "ReversibleEmbedding": ("tie_weights", (True, False)),
}
"""The one constructor argument of each quantizable class that changes its variables, with the
values it may take, tried in turn where keras_hub's source does not pass it as a constant."""


def mapped_policy(context: Mapping[str, object] | None, layer_path: str) -> object | None:
    """The dtype policy a keras_hub model's ``DTypePolicyMap`` gives the layer at ``layer_path``:
    the exact key, else the map's default; None where the model's config holds no map.

    Keras falls back to ``re.fullmatch`` of every key when no key is exact; a map with keys that
    are patterns (written by hand, never by ``quantize``) is answered with an unreadable policy
    rather than by running patterns from the file, so the layer keeps positional names."""
    policy = context.get("dtype") if context else None
    if not isinstance(policy, Mapping) or policy.get("class_name") != "DTypePolicyMap":
        return None
    inner = policy.get("config")
    inner = inner if isinstance(inner, Mapping) else {}
    table = inner.get("policy_map")
    table = table if isinstance(table, Mapping) else {}
    if layer_path in table:
        return table[layer_path]
    if any(_REGEX_SIGNS.intersection(key) for key in table if isinstance(key, str)):
        return {"class_name": "DTypePolicyMap"}  # read by quantization_mode as unknown
    return inner.get("default_policy")


def mapped_layer_variables(
    class_name: str,
    constants: Mapping[str, object],
    context: Mapping[str, object] | None,
    layer_path: str,
    stored_dtypes: tuple[str | None, ...],
) -> LayerVariables | None:
    """The variables of a quantizable Keras layer created by keras_hub code (``class_name`` is
    the Keras class, or the Keras base of a keras_hub subclass), as stored and as ``load_model``
    rebuilds them, when its model is quantized; None otherwise.

    The mode is the one the model's policy map gives the layer. A weights-only file has no map:
    there the stored variables themselves tell, since ``quantize`` changes what is stored (an int8
    kernel or table first, or six float8 scale and amax-history variables beside the kernel), and
    a mode is taken only when every stored dtype fits it.

    The layer's own config is not saved, so an argument that changes its variables (a bias, an
    untied output projection) is the constant from keras_hub's source where there is one, else
    the one value whose variables fit the stored ones; None when not exactly one fits (a tied int8
    ReversibleEmbedding stores 2 variables, an untied one 4; but an untied int8 table and a tied
    grouped-int4 one both store int8, float, int8, float, so a weights-only file keeps positions)."""
    if class_name not in ADAPTABLE_CLASSES:
        return None
    policy = mapped_policy(context, layer_path)
    policies: list[object]
    dtypes: tuple[str | None, ...] | None = None
    if policy is not None:
        if quantization_mode({"dtype": policy}) is None:
            return None
        policies = [policy]
    elif context is not None and context.get("dtype") is None:  # a weights-only file: no config
        policies = list(_STORED_MODES.get(stored_dtypes[0] if stored_dtypes else None, ()))
        if len(stored_dtypes) >= _FLOAT8_MIN_STORED:
            policies.append("float8_from_float32")
        dtypes = stored_dtypes
    else:
        return None
    argument, values = _OPTIONAL_ARGUMENTS.get(class_name, ("", ()))
    fitting: dict[tuple[str, ...], LayerVariables] = {}
    for mode in policies:
        config = {**constants, "dtype": mode}
        variants = [config] if not argument or argument in constants else [{**config, argument: v} for v in values]
        for variant in variants:
            plan = layer_variables(class_name, variant)
            if plan is None or len(plan.stored) != len(stored_dtypes):
                continue
            if dtypes is not None and not all(
                slot.dtype is None and dtype in _FLOATS or slot.dtype == dtype
                for slot, dtype in zip(plan.stored, dtypes)
            ):
                continue
            fitting.setdefault(tuple(slot.leaf for slot in plan.loaded), plan)  # int8 before int4
    return next(iter(fitting.values())) if len(fitting) == 1 else None


_FLOATS = frozenset({"float16", "bfloat16", "float32", "float64"})
_FLOAT8_MIN_STORED = 7
"""A float8 layer stores its kernel and six scale and amax-history variables (and its bias)."""
_STORED_MODES: dict[str | None, tuple[str, ...]] = {
    "int8": ("int8_from_float32", "int4/128_from_float32", "int4_from_float32"),
}
"""Modes whose stored kernel or table has this dtype (int4 packs two values into each int8)."""
