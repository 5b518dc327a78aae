"""decay-audit: which weights of a TensorFlow/Keras model get weight decay, with proof.

``import decay_audit`` is cheap: TensorFlow, Keras, h5py and pandas load only in the
stages that need them, so ``decay-audit --help`` and metadata scans stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "scan": "decay_audit.stages.scan",
    "scan_inventory": "decay_audit.stages.scan",
    "scan_many": "decay_audit.stages.scan_many",
    "emit_rules": "decay_audit.stages.rules",
    "check_rules": "decay_audit.stages.rules",
    "verify": "decay_audit.stages.verify",
    "VerifyOptions": "decay_audit.stages.verify",
    "ScanReport": "decay_audit.results",
    "ScannedVariable": "decay_audit.results",
    "BatchReport": "decay_audit.results",
    "CheckReport": "decay_audit.results",
    "RuleEmission": "decay_audit.results",
    "VerifyReport": "decay_audit.results",
    "Measurement": "decay_audit.results",
    "Finding": "decay_audit.findings",
    "FindingKind": "decay_audit.findings",
    "Outcome": "decay_audit.findings",
    "Classification": "decay_audit.classify",
    "Decision": "decay_audit.policy",
    "Policy": "decay_audit.policy",
    "Preset": "decay_audit.kinds",
    "Kind": "decay_audit.kinds",
    "Confidence": "decay_audit.kinds",
    "KerasBackend": "decay_audit.kinds",
    "Inventory": "decay_audit.inventory",
    "VariableRecord": "decay_audit.inventory",
    "Limits": "decay_audit.loaders.interface",
    "load": "decay_audit.loaders",
    "DecayAuditError": "decay_audit.errors",
    "ModelLoadError": "decay_audit.errors",
    "UsageError": "decay_audit.errors",
    "SetupError": "decay_audit.errors",
    "OutputFormat": "decay_audit.report",
    "assert_decay": "decay_audit.testing",
}

__all__ = [
    "BatchReport",
    "CheckReport",
    "Classification",
    "Confidence",
    "DecayAuditError",
    "Decision",
    "Finding",
    "FindingKind",
    "Inventory",
    "KerasBackend",
    "Kind",
    "Limits",
    "Measurement",
    "ModelLoadError",
    "Outcome",
    "OutputFormat",
    "Policy",
    "Preset",
    "RuleEmission",
    "ScanReport",
    "ScannedVariable",
    "SetupError",
    "UsageError",
    "VariableRecord",
    "VerifyOptions",
    "VerifyReport",
    "assert_decay",
    "check_rules",
    "emit_rules",
    "load",
    "scan",
    "scan_inventory",
    "scan_many",
    "verify",
]
"""The public names; each loads on first use, from the module :data:`_EXPORTS` names."""


def __getattr__(name: str) -> Any:
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'decay_audit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from decay_audit.classify import Classification
    from decay_audit.errors import DecayAuditError, ModelLoadError, SetupError, UsageError
    from decay_audit.findings import Finding, FindingKind, Outcome
    from decay_audit.inventory import Inventory, VariableRecord
    from decay_audit.kinds import Confidence, KerasBackend, Kind, Preset
    from decay_audit.loaders import load
    from decay_audit.loaders.interface import Limits
    from decay_audit.policy import Decision, Policy
    from decay_audit.report import OutputFormat
    from decay_audit.results import (
        BatchReport,
        CheckReport,
        Measurement,
        RuleEmission,
        ScannedVariable,
        ScanReport,
        VerifyReport,
    )
    from decay_audit.stages.rules import check_rules, emit_rules
    from decay_audit.stages.scan import scan, scan_inventory
    from decay_audit.stages.scan_many import scan_many
    from decay_audit.stages.verify import VerifyOptions, verify
    from decay_audit.testing import assert_decay
