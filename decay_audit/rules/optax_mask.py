"""optax: a boolean mask aligned with ``model.trainable_variables`` (True = decay).

Semantics from optax ``add_decayed_weights(weight_decay, mask=)`` / ``masked()``
(optax/_src/transform.py): the mask has the params' structure, True where decay applies.
For Keras-on-JAX stateless training the params are ``[v.value for v in
model.trainable_variables]``, so the mask is a list in that order. The file carries the
paths too, and the snippet refuses a model whose trainable paths differ, because a
positional mask applied to another model silently decays the wrong weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from decay_audit.errors import OptionError, UsageError
from decay_audit.files import validate
from decay_audit.inventory import VariableRecord
from decay_audit.results import Emitted, ScanReport
from decay_audit.rules.interface import Applied, Match, decisions, trainable

SNIPPET = """import json, optax

rules = json.load(open(RULES_PATH))
assert [v.path for v in model.trainable_variables] == rules["paths"], "mask was made for another model"
tx = optax.adamw(learning_rate, weight_decay=wd, mask=rules["mask"])
"""


class OptaxTarget:
    name = "optax"
    description = "optax mask (True = decay) aligned with model.trainable_variables"
    source = "optax optax/_src/transform.py: add_decayed_weights(mask=); optax/_src/wrappers.py: masked"

    def emit(self, report: ScanReport) -> Emitted:
        pairs = [(r, d) for r, d in zip(*decisions(report)) if r.trainable]
        return Emitted({"paths": [r.path for r, _ in pairs], "mask": [bool(d) for _, d in pairs]}, snippet=SNIPPET)

    def parse(self, document: Any, subject: str) -> dict[str, list[Any] | None]:
        """A mask file's document, validated against ``optax-rules.schema.json``."""
        validate(document, "optax-rules", subject)
        paths = document.get("paths")
        if paths is not None and len(paths) != len(document["mask"]):
            raise UsageError(subject, f"'paths' has {len(paths)} entries, 'mask' {len(document['mask'])}")
        return {"mask": document["mask"], "paths": paths}

    def from_var_names(self, names: Sequence[str]) -> Any:
        raise OptionError("var_names", "the optax target takes a mask file (--rules), not names")

    def apply(self, rule: dict[str, Any], records: Sequence[VariableRecord]) -> Applied:
        candidates = trainable(records)
        if len(rule["mask"]) != len(candidates):
            raise UsageError(
                "rules",
                f"mask has {len(rule['mask'])} entries, the model {len(candidates)} "
                "trainable variables: made for another model",
            )
        if rule["paths"] is not None and rule["paths"] != [r.path for r in candidates]:
            raise UsageError("rules", "mask paths differ from the model's trainable variables: made for another model")
        excluded = frozenset(r.path for r, keep in zip(candidates, rule["mask"]) if not keep)
        return Applied(
            excluded, (Match("mask=True", tuple(r.path for r, k in zip(candidates, rule["mask"]) if k), True),)
        )
