"""The scan stage: load → classify → decide, gathered in one report object."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from decay_audit.classify import Classification, classify
from decay_audit.inventory import Inventory, VariableRecord
from decay_audit.kinds import Confidence, Kind
from decay_audit.loaders import DEFAULT_LIMITS, Limits, load
from decay_audit.policy import Decision, Policy, PolicyFindings, Preset, apply_policy


@dataclass(frozen=True)
class ScannedVariable:
    """One variable with its classification and decision."""

    record: VariableRecord
    classification: Classification
    decision: Decision


@dataclass(frozen=True)
class KindSummary:
    kind: Kind
    variables: int
    parameters: int
    decayed: int


@dataclass(frozen=True)
class ScanSummary:
    variables: int
    parameters: int
    decayed_variables: int
    decayed_parameters: int
    excluded_variables: int
    excluded_parameters: int
    low_confidence: int
    conflicting: int
    per_kind: tuple[KindSummary, ...]


@dataclass(frozen=True)
class ScanReport:
    """What ``decay-audit scan`` found; every output format renders this object."""

    inventory: Inventory
    variables: tuple[ScannedVariable, ...]
    policy: Policy
    policy_findings: PolicyFindings = PolicyFindings()

    @property
    def preset(self) -> Preset:
        return self.policy.preset

    @property
    def source(self) -> str:
        return self.inventory.source

    @property
    def loader(self) -> str:
        return self.inventory.loader

    @property
    def notes(self) -> tuple[str, ...]:
        return self.inventory.notes

    def summary(self) -> ScanSummary:
        per_kind = []
        for kind in Kind:
            members = [v for v in self.variables if v.classification.kind is kind]
            if members:
                per_kind.append(KindSummary(kind, len(members), sum(v.record.size for v in members),
                                            sum(1 for v in members if v.decision.decay)))
        decayed = [v for v in self.variables if v.decision.decay]
        excluded = [v for v in self.variables if not v.decision.decay]
        return ScanSummary(
            variables=len(self.variables),
            parameters=sum(v.record.size for v in self.variables),
            decayed_variables=len(decayed),
            decayed_parameters=sum(v.record.size for v in decayed),
            excluded_variables=len(excluded),
            excluded_parameters=sum(v.record.size for v in excluded),
            low_confidence=sum(1 for v in self.variables if v.classification.confidence is Confidence.LOW),
            conflicting=sum(1 for v in self.variables if v.classification.conflicts),
            per_kind=tuple(per_kind),
        )

    def by_path(self) -> dict[str, ScannedVariable]:
        return {v.record.path: v for v in self.variables}

    def to_dataframe(self) -> Any:
        """One row per variable (pandas); imported here so ``import decay_audit`` stays light."""
        import pandas as pd

        from decay_audit.report.rows import variable_row

        return pd.DataFrame([variable_row(v) for v in self.variables])


def scan_inventory(inventory: Inventory, policy: Policy | Preset | str = Preset.KERNELS_ONLY) -> ScanReport:
    if not isinstance(policy, Policy):
        policy = Policy(Preset(policy))
    classifications = classify(inventory.records)
    result = apply_policy(inventory.records, classifications, policy)
    scanned = tuple(
        ScannedVariable(record, classification, decision)
        for record, classification, decision in zip(inventory.records, classifications, result.decisions)
    )
    return ScanReport(inventory=inventory, variables=scanned, policy=policy, policy_findings=result.findings)


def scan(source: Any, preset: Policy | Preset | str = Preset.KERNELS_ONLY, limits: Limits = DEFAULT_LIMITS) -> ScanReport:
    """Scan a model file, SavedModel directory, directory with one model, or a live Keras model / tf.Module.

    ``preset`` is a preset name or a full :class:`~decay_audit.policy.Policy` with overrides.
    """
    return scan_inventory(load(source, limits), preset)
