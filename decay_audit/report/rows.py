"""The one flat view of a scanned variable that JSON, CSV, Markdown and pandas share."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # audit.py builds its dataframe from these rows: no import cycle at run time
    from decay_audit.audit import ScannedVariable


def variable_row(variable: ScannedVariable) -> dict[str, Any]:
    record, classification, decision = variable.record, variable.classification, variable.decision
    return {
        "path": record.path,
        "leaf": record.leaf,
        "layer": record.layer,
        "layer_class": record.layer_class,
        "shape": [d if d is not None else -1 for d in record.shape],
        "dtype": record.dtype,
        "trainable": record.trainable,
        "parameters": record.size,
        "kind": classification.kind.value,
        "decay": decision.decay,
        "confidence": classification.confidence.value,
        "evidence": list(classification.evidence),
        "conflicts": list(classification.conflicts),
        "reason": decision.reason,
        "origin": record.origin,
    }
