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
    LAYER_VARIABLES,
    SUBLAYER_ATTRIBUTES,
    VariableSlot,
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
