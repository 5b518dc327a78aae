"""``scan``: load → classify → decide, gathered in one :class:`~decay_audit.results.ScanReport`."""

from __future__ import annotations

from typing import Any

from decay_audit.classify import classify
from decay_audit.inventory import Inventory
from decay_audit.kinds import Preset
from decay_audit.loaders import DEFAULT_LIMITS, Limits, load
from decay_audit.policy import Policy, apply_policy
from decay_audit.results import ScannedVariable, ScanReport


def scan_inventory(inventory: Inventory, policy: Policy | Preset | str = Preset.KERNELS_ONLY) -> ScanReport:
    """Classify and decide every variable of an inventory already read."""
    if not isinstance(policy, Policy):
        policy = Policy(Preset(policy))
    classifications = classify(inventory.records)
    result = apply_policy(inventory.records, classifications, policy)
    scanned = tuple(
        ScannedVariable(record, classification, decision)
        for record, classification, decision in zip(inventory.records, classifications, result.decisions)
    )
    return ScanReport(inventory=inventory, variables=scanned, policy=policy, policy_findings=result.findings)


def scan(
    source: Any, preset: Policy | Preset | str = Preset.KERNELS_ONLY, limits: Limits = DEFAULT_LIMITS
) -> ScanReport:
    """Scan a model file, SavedModel directory, directory with one model, or a live Keras model / tf.Module.

    ``preset`` is a preset name or a full :class:`~decay_audit.policy.Policy` with overrides.
    """
    return scan_inventory(load(source, limits), preset)
