"""Targets that ``re.search`` regexes against the full TensorFlow variable name (``dense/bias:0``).

- ``tf-keras``: tf_keras 2.x optimizers' ``exclude_from_weight_decay(var_list=, var_names=)``;
  semantics from tf_keras 2.21 ``tf_keras/src/optimizers/optimizer.py`` ``_use_weight_decay``:
  each name is ``re.search``ed separately against ``variable.name``; any hit excludes.
- ``model-garden``: TF Model Garden ``AdamWeightDecay`` (``official/modeling/optimization/
  legacy_adamw.py`` ``_do_use_weight_decay(var.name)``): any ``include_in_weight_decay`` hit
  decays, else any ``exclude_from_weight_decay`` hit excludes, else decays.

Both see ``variable.name`` with the ``:0`` suffix. Emitted patterns are anchored: ``/L:0$``
where every variable with leaf ``L`` is excluded, else the escaped full name. What they
cannot express: variables whose name a scan does not know (positional leaves).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from decay_audit import user_regex
from decay_audit.files import validate
from decay_audit.inventory import VariableRecord
from decay_audit.results import Emitted, ScanReport
from decay_audit.rules.interface import (
    Applied,
    Match,
    compile_pattern,
    decisions,
    exclusions,
    trainable,
)


def tf_name(record: VariableRecord) -> str:
    return f"{record.path}:0"


def _exclusion_patterns(records: Sequence[VariableRecord], decay: Sequence[bool]) -> tuple[list[str], list[str]]:
    found, unexpressible = exclusions(records, decay)
    patterns: list[str] = []
    for exclusion in found:
        if exclusion.whole_leaf:
            pattern = f"(^|/){re.escape(exclusion.record.leaf)}:0$"
            if pattern not in patterns:
                patterns.append(pattern)
        else:
            patterns.append(f"^{re.escape(tf_name(exclusion.record))}$")
    return patterns, unexpressible


def _matches(patterns: list[str], candidates: list[VariableRecord], decays: bool = False) -> list[Match]:
    return [Match(p, tuple(r.path for r in candidates if user_regex.search(p, tf_name(r))), decays) for p in patterns]


class TfKerasTarget:
    name = "tf-keras"
    description = "tf_keras (Keras 2) optimizer.exclude_from_weight_decay(var_names=), full names with :0"
    source = "tf_keras 2.21 tf_keras/src/optimizers/optimizer.py: exclude_from_weight_decay, _use_weight_decay"

    def emit(self, report: ScanReport) -> Emitted:
        patterns, unexpressible = _exclusion_patterns(*decisions(report))
        snippet = (
            "import json\noptimizer.exclude_from_weight_decay(var_names=json.load(open(RULES_PATH))"
            '["exclude_var_names"])\n'
        )
        return Emitted({"exclude_var_names": patterns}, snippet=snippet, unexpressible=tuple(unexpressible))

    def parse(self, document: Any, subject: str) -> list[str]:
        """A rule file's document, validated against ``tf-keras-rules.schema.json``."""
        validate(document, "tf-keras-rules", subject)
        return self.from_var_names(document["exclude_var_names"], subject)

    def from_var_names(self, names: Sequence[str], subject: str = "--var-names") -> list[str]:
        for name in names:
            compile_pattern(name, subject)
        return list(names)

    def apply(self, rule: list[str], records: Sequence[VariableRecord]) -> Applied:
        candidates = trainable(records)
        excluded = frozenset(r.path for r in candidates if any(user_regex.search(p, tf_name(r)) for p in rule))
        return Applied(excluded, tuple(_matches(rule, candidates)))


class ModelGardenTarget:
    name = "model-garden"
    description = "TF Model Garden AdamWeightDecay exclude_from_weight_decay / include_in_weight_decay"
    source = "tensorflow/models official/modeling/optimization/legacy_adamw.py: _do_use_weight_decay"

    def emit(self, report: ScanReport) -> Emitted:
        patterns, unexpressible = _exclusion_patterns(*decisions(report))
        snippet = (
            "# optimizer config (YAML), e.g. in an experiment config:\n"
            "# optimizer:\n#   type: adamw\n#   adamw:\n#     exclude_from_weight_decay: [...see file...]\n"
        )
        return Emitted(
            {"exclude_from_weight_decay": patterns, "include_in_weight_decay": []},
            snippet=snippet,
            unexpressible=tuple(unexpressible),
        )

    def parse(self, document: Any, subject: str) -> dict[str, list[str]]:
        """A rule file's document, validated against ``model-garden-rules.schema.json``; an
        absent or null list (the optimizer config's default) is empty."""
        validate(document, "model-garden-rules", subject)
        rule = {key: list(document.get(key) or []) for key in ("exclude_from_weight_decay", "include_in_weight_decay")}
        for pattern in rule["exclude_from_weight_decay"] + rule["include_in_weight_decay"]:
            compile_pattern(pattern, subject)
        return rule

    def from_var_names(self, names: Sequence[str]) -> dict[str, list[str]]:
        for name in names:
            compile_pattern(name, "--var-names")
        return {"exclude_from_weight_decay": list(names), "include_in_weight_decay": []}

    def apply(self, rule: dict[str, list[str]], records: Sequence[VariableRecord]) -> Applied:
        candidates = trainable(records)

        def decays(record: VariableRecord) -> bool:
            name = tf_name(record)
            if any(user_regex.search(p, name) for p in rule["include_in_weight_decay"]):
                return True
            return not any(user_regex.search(p, name) for p in rule["exclude_from_weight_decay"])

        excluded = frozenset(r.path for r in candidates if not decays(r))
        matches = _matches(rule["exclude_from_weight_decay"], candidates)
        matches += _matches(rule["include_in_weight_decay"], candidates, decays=True)
        return Applied(excluded, tuple(matches))
