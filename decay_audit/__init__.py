"""decay-audit: which weights of a TensorFlow/Keras model get weight decay, with proof.

``import decay_audit`` is cheap: TensorFlow, Keras, h5py and pandas load only in the
stages that need them, so ``decay-audit --help`` and metadata scans stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "scan": "decay_audit.audit",
    "scan_inventory": "decay_audit.audit",
    "ScanReport": "decay_audit.audit",
    "ScannedVariable": "decay_audit.audit",
    "Classification": "decay_audit.classify",
    "Decision": "decay_audit.policy",
    "Preset": "decay_audit.policy",
    "Inventory": "decay_audit.inventory",
    "VariableRecord": "decay_audit.inventory",
    "Kind": "decay_audit.kinds",
    "Confidence": "decay_audit.kinds",
    "Limits": "decay_audit.loaders.interface",
    "load": "decay_audit.loaders",
    "DecayAuditError": "decay_audit.errors",
    "ModelLoadError": "decay_audit.errors",
    "SetupError": "decay_audit.probe.setup",
    "OutputFormat": "decay_audit.report",
    "verify": "decay_audit.verification",
    "VerifyReport": "decay_audit.verification",
    "assert_decay": "decay_audit.testing",
    "Policy": "decay_audit.policy",
    "emit_rules": "decay_audit.rulecheck",
    "check_rules": "decay_audit.rulecheck",
    "scan_many": "decay_audit.batch",
    "BatchReport": "decay_audit.batch",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'decay_audit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from decay_audit.audit import ScannedVariable, ScanReport, scan, scan_inventory
    from decay_audit.batch import BatchReport, scan_many
    from decay_audit.classify import Classification
    from decay_audit.errors import DecayAuditError, ModelLoadError
    from decay_audit.inventory import Inventory, VariableRecord
    from decay_audit.kinds import Confidence, Kind
    from decay_audit.loaders import load
    from decay_audit.loaders.interface import Limits
    from decay_audit.policy import Decision, Policy, Preset
    from decay_audit.probe.setup import SetupError
    from decay_audit.report import OutputFormat
    from decay_audit.rulecheck import check_rules, emit_rules
    from decay_audit.testing import assert_decay
    from decay_audit.verification import VerifyReport, verify
