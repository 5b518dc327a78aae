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
only where every variable with that leaf is excluded) and ``exclude_paths`` (turned into
``var_list`` by path). What it cannot express: variables whose leaf is unknown to a scan
(custom classes in a .keras file, stored by position), because their live path is not known.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from decay_audit.errors import UsageError
from decay_audit.inventory import VariableRecord
from decay_audit.rules.interface import (
    Applied,
    Emitted,
    Match,
    compile_pattern,
    exclusions,
    require_list_of_strings,
    trainable,
)

SNIPPET = '''import json

rules = json.load(open(RULES_PATH))
optimizer.exclude_from_weight_decay(  # call once, before the optimizer is built
    var_list=[v for v in model.trainable_variables if v.path in set(rules["exclude_paths"])],
    var_names=rules["exclude_var_names"],
)
# Under mixed_float16, call this on the inner optimizer BEFORE compile() wraps it in a
# LossScaleOptimizer: calling it on the wrapper has no effect.
'''


BACKENDS = ("tensorflow", "jax", "torch", "numpy")


def searched_name(record: VariableRecord, backend: str) -> str:
    """The string Keras 3's ``_use_weight_decay`` searches during training on ``backend``."""
    return f"{record.path}:0" if backend == "tensorflow" else record.leaf


class Keras3Target:
    name = "keras"
    description = "Keras 3 optimizer.exclude_from_weight_decay(var_list=, var_names=)"
    source = "keras 3.15 keras/src/optimizers/base_optimizer.py: exclude_from_weight_decay, _use_weight_decay"

    def __init__(self, backend: str = "tensorflow"):
        self.backend = backend

    def emit(self, records: Sequence[VariableRecord], decay: Sequence[bool]) -> Emitted:
        found, unexpressible = exclusions(records, decay)
        names: list[str] = []
        paths: list[str] = []
        for exclusion in found:
            if exclusion.whole_leaf:
                pattern = f"(^|/){re.escape(exclusion.record.leaf)}(:0)?$"
                if pattern not in names:
                    names.append(pattern)
            else:
                paths.append(exclusion.record.path)
        return Emitted({"exclude_var_names": names, "exclude_paths": paths}, snippet=SNIPPET,
                       unexpressible=tuple(unexpressible))

    def parse(self, document: Any, subject: str) -> dict[str, list[str]]:
        if not isinstance(document, dict):
            raise UsageError(subject, "rule file must be a JSON/YAML object")
        rule = {"exclude_var_names": require_list_of_strings(document.get("exclude_var_names"), "exclude_var_names", subject),
                "exclude_paths": require_list_of_strings(document.get("exclude_paths"), "exclude_paths", subject)}
        self._joined(rule["exclude_var_names"], subject)
        return rule

    def from_var_names(self, names: Sequence[str]) -> dict[str, list[str]]:
        rule = {"exclude_var_names": list(names), "exclude_paths": []}
        self._joined(rule["exclude_var_names"], "--var-names")
        return rule

    @staticmethod
    def _joined(names: list[str], subject: str) -> re.Pattern[str] | None:
        for name in names:
            compile_pattern(name, subject)
        return compile_pattern("|".join(set(names)), subject) if names else None

    def apply(self, rule: dict[str, list[str]], records: Sequence[VariableRecord]) -> Applied:
        joined = self._joined(rule["exclude_var_names"], "rule")
        listed = set(rule["exclude_paths"])
        candidates = trainable(records)
        backend = self.backend
        excluded = frozenset(r.path for r in candidates if r.path in listed or (
            joined is not None and joined.search(searched_name(r, backend)) is not None))
        matches = [Match(name, tuple(r.path for r in candidates if re.search(name, searched_name(r, backend))))
                   for name in rule["exclude_var_names"]]
        matches += [Match(f"path {path}", tuple(r.path for r in candidates if r.path == path))
                    for path in rule["exclude_paths"]]
        return Applied(excluded, tuple(matches))

