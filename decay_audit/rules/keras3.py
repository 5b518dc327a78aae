"""Keras 3 optimizers: ``optimizer.exclude_from_weight_decay(var_list=..., var_names=...)``.

Semantics copied from keras/src/optimizers/base_optimizer.py (Keras 3.15,
``exclude_from_weight_decay`` and ``_use_weight_decay``): ``var_list`` excludes those
exact variable objects; ``var_names`` are joined into ONE unescaped regex
``"|".join(set(var_names))`` that is ``re.search``ed against ``variable.name``.
A second call replaces the first.

Which name is searched depends on the backend, observed on Keras 3.15:

- JAX, torch, numpy: the base optimizer passes Keras variables, whose ``name`` is the
  LEAF (``gamma``), so ``var_names=["LayerNorm"]`` or ``["dense2"]`` match nothing;
- TensorFlow: keras/src/backend/tensorflow/optimizer.py ``_apply_weight_decay`` passes the
  underlying ``tf.Variable``, whose name is the full path plus ``:0``
  (``sequential/layer_normalization/gamma:0``), so ``["dense2"]`` excludes dense2's kernel too.
  Calling ``optimizer._use_weight_decay(keras_variable)`` by hand shows the leaf behaviour
  and is therefore not what training does on TensorFlow.

The emitted file holds ``exclude_var_names`` (``(^|/)LEAF(:0)?$``, right on every backend,
only where every variable with that leaf is excluded) and three ``var_list`` forms, built from
``variable.path``, which names a variable the same way on every backend:

- ``exclude_paths``: exact paths;
- ``exclude_layers``: a layer's path, for variables whose leaf a scan cannot know (classes
  not importable, stored by position) when every variable that layer owns is excluded: the
  snippet selects variables whose path minus the leaf equals it;
- ``exclude_positions``: ``{"layer": path, "index": i}``, the i-th variable the layer owns, in
  ``model.weights`` order (Keras 3.15 lists a layer's own variables as it saves them,
  ``_trainable_variables + _non_trainable_variables``), where the layer's variables differ.

What it cannot express: a leaf-unknown variable whose layer path is shared by another layer
(two layers, one name scope), since neither prefix nor position then singles it out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, TypedDict

from decay_audit import user_regex
from decay_audit.errors import UsageError
from decay_audit.files import validate
from decay_audit.inventory import VariableRecord
from decay_audit.kinds import KerasBackend
from decay_audit.results import Emitted, ScanReport
from decay_audit.rules.interface import (
    Applied,
    Match,
    compile_pattern,
    decisions,
    exclusions,
    trainable,
)

SNIPPET = """import json

rules = json.load(open(RULES_PATH))
owned = {}  # layer path -> the variables it owns, in model.weights order
for v in model.weights:
    owned.setdefault(v.path.rpartition("/")[0], []).append(v)
var_list = [v for v in model.trainable_variables if v.path in set(rules["exclude_paths"])
            or v.path.rpartition("/")[0] in set(rules.get("exclude_layers", []))]
var_list += [owned[p["layer"]][p["index"]] for p in rules.get("exclude_positions", [])]
optimizer.exclude_from_weight_decay(  # call once, before the optimizer is built
    var_list=var_list,
    var_names=rules["exclude_var_names"],
)
# Under mixed_float16, call this on the inner optimizer BEFORE compile() wraps it in a
# LossScaleOptimizer: calling it on the wrapper has no effect.
"""


_AUTO_NAMED = re.compile(r"^variable(_\d+)?$")


def searched_name(record: VariableRecord, backend: str) -> str:
    """The string Keras 3's ``_use_weight_decay`` searches during training on ``backend``."""
    return f"{record.path}:0" if backend == KerasBackend.TENSORFLOW else record.leaf


class Position(TypedDict):
    """A variable selected by its owning layer's path and its index in that layer's ``weights``."""

    layer: str
    index: int


class KerasRule(TypedDict):
    """The keras target's rule file, as parsed: every list present, possibly empty."""

    exclude_var_names: list[str]
    exclude_paths: list[str]
    exclude_layers: list[str]
    exclude_positions: list[Position]


class Keras3Target:
    name = "keras"
    description = "Keras 3 optimizer.exclude_from_weight_decay(var_list=, var_names=)"
    source = "keras 3.15 keras/src/optimizers/base_optimizer.py: exclude_from_weight_decay, _use_weight_decay"

    def __init__(self, backend: str = KerasBackend.TENSORFLOW.value):
        self.backend = backend

    def emit(self, report: ScanReport) -> Emitted:
        records, decay = decisions(report)
        found, positional = exclusions(records, decay)
        # Keras numbers unnamed variables process-wide (``variable_3``, FACTS: ConvNeXt's LayerScale):
        # their path is not stable across processes, so they are selected by layer and position too.
        positional += [e.record.path for e in found if _AUTO_NAMED.match(e.record.leaf)]
        found = [e for e in found if not _AUTO_NAMED.match(e.record.leaf)]
        names: list[str] = []
        paths: list[str] = []
        for exclusion in found:
            if exclusion.whole_leaf:
                pattern = f"(^|/){re.escape(exclusion.record.leaf)}(:0)?$"
                if pattern not in names:
                    names.append(pattern)
            else:
                paths.append(exclusion.record.path)
        layers, positions, unexpressible = _by_layer(records, decay, set(positional))
        return Emitted(
            {
                "exclude_var_names": names,
                "exclude_paths": paths,
                "exclude_layers": layers,
                "exclude_positions": positions,
            },
            snippet=SNIPPET,
            unexpressible=tuple(unexpressible),
        )

    def parse(self, document: Any, subject: str) -> KerasRule:
        """A rule file's document, validated against ``keras-rules.schema.json`` (an unknown key
        is an error, not an empty list); absent lists are empty."""
        validate(document, "keras-rules", subject)
        rule: KerasRule = {
            "exclude_var_names": list(document.get("exclude_var_names", [])),
            "exclude_paths": list(document.get("exclude_paths", [])),
            "exclude_layers": list(document.get("exclude_layers", [])),
            "exclude_positions": _positions(document.get("exclude_positions", []), subject),
        }
        self._joined(rule["exclude_var_names"], subject)
        return rule

    def from_var_names(self, names: Sequence[str]) -> KerasRule:
        rule: KerasRule = {
            "exclude_var_names": list(names),
            "exclude_paths": [],
            "exclude_layers": [],
            "exclude_positions": [],
        }
        self._joined(rule["exclude_var_names"], "--var-names")
        return rule

    @staticmethod
    def _joined(names: list[str], subject: str) -> re.Pattern[str] | None:
        for name in names:
            compile_pattern(name, subject)
        return compile_pattern("|".join(set(names)), subject) if names else None

    def apply(self, rule: KerasRule, records: Sequence[VariableRecord]) -> Applied:
        joined = self._joined(rule["exclude_var_names"], "rule")
        listed = set(rule["exclude_paths"])
        layers = set(rule.get("exclude_layers", ()))
        positions = {(p["layer"], p["index"]) for p in rule.get("exclude_positions", ())}
        place = _owned_positions(records)
        candidates = trainable(records)
        backend = self.backend
        excluded = frozenset(
            r.path
            for r in candidates
            if r.path in listed
            or place[id(r)][0] in layers
            or place[id(r)] in positions
            or (joined is not None and user_regex.search(joined, searched_name(r, backend)))
        )
        matches = [
            Match(name, tuple(r.path for r in candidates if user_regex.search(name, searched_name(r, backend))))
            for name in rule["exclude_var_names"]
        ]
        matches += [
            Match(f"path {path}", tuple(r.path for r in candidates if r.path == path)) for path in rule["exclude_paths"]
        ]
        matches += [
            Match(f"layer {layer}", tuple(r.path for r in candidates if place[id(r)][0] == layer))
            for layer in rule.get("exclude_layers", ())
        ]
        matches += [
            Match(
                f"layer {p['layer']} variable {p['index']}",
                tuple(r.path for r in candidates if place[id(r)] == (p["layer"], p["index"])),
            )
            for p in rule.get("exclude_positions", ())
        ]
        return Applied(excluded, tuple(matches))


def _owner(record: VariableRecord) -> str:
    return record.path.rpartition("/")[0]


def _owned_positions(records: Sequence[VariableRecord]) -> dict[int, tuple[str, int]]:
    """Each record's (layer path, index among the variables that layer path owns), in inventory
    order: what the snippet's ``owned`` lists hold, since Keras readers list a layer's variables in
    the ``model.weights`` order of the model ``load_model`` rebuilds. That is not always the file's
    order: a quantized Dense saves kernel, bias, kernel_scale but loads as bias, kernel,
    kernel_scale (trainable first), and LoRA factors are not stored at all."""
    counters: dict[str, int] = {}
    place = {}
    for record in records:
        owner = _owner(record)
        place[id(record)] = (owner, counters.get(owner, 0))
        counters[owner] = counters.get(owner, 0) + 1
    return place


def _by_layer(
    records: Sequence[VariableRecord], decay: Sequence[bool], positional: set[str]
) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """Exclusions for variables whose leaf is unknown: the whole layer where all it owns is
    excluded, else positions; nothing where two layers share the path (T5 has two
    ``self_attention`` layers at top level), since the snippet could not tell them apart."""
    if not positional:
        return [], [], []
    place = _owned_positions(records)
    owners: dict[str, list[tuple[VariableRecord, bool]]] = {}
    layer_of: dict[str, set[tuple[str | None, str | None]]] = {}
    for record, decayed in zip(records, decay):
        owners.setdefault(_owner(record), []).append((record, decayed))
        layer_of.setdefault(_owner(record), set()).add((record.layer, record.origin.rpartition("/")[0]))
    layers: list[str] = []
    positions: list[dict[str, Any]] = []
    unexpressible: list[str] = []
    for record, decayed in zip(records, decay):
        if record.path not in positional or not record.trainable or decayed:
            continue
        owner = _owner(record)
        if len(layer_of[owner]) > 1:
            unexpressible.append(record.path)
        elif all(not d or not r.trainable for r, d in owners[owner]):
            if owner not in layers:
                layers.append(owner)
        else:
            positions.append({"layer": owner, "index": place[id(record)][1]})
    return layers, positions, unexpressible


def _positions(value: list[dict[str, Any]], subject: str) -> list[Position]:
    """The schema's ``integer`` also admits ``1.0``; a position indexes a Python list, so an int it is."""
    for number, position in enumerate(value):
        if not isinstance(position["index"], int):
            raise UsageError(subject, f"exclude_positions/{number}/index: {position['index']!r} is not a whole number")
    return [{"layer": v["layer"], "index": v["index"]} for v in value]
