"""Batches for the probe: the set-up's own data, or synthetic batches shaped from the model.

Nothing is downloaded. A set-up can hand its own data (``batch`` or ``dataset`` in the
set-up dict); otherwise inputs follow the model's input structure (``inputs``, or the
declared signature of a tf_keras model without inputs, ``signature``) and targets fit its
loss (``targets``).
"""

from __future__ import annotations

from decay_audit.probe.data.inputs import InputSpec, input_structure
from decay_audit.probe.data.source import BatchSource
from decay_audit.probe.data.targets import TargetKind, make_target

__all__ = [
    "BatchSource",
    "InputSpec",
    "TargetKind",
    "input_structure",
    "make_target",
]
