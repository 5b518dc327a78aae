"""Every record a command returns, in one module that no stage owns.

The stages (:mod:`decay_audit.stages`) build these records and the output formats
(:mod:`decay_audit.report`) render them; neither side imports the other. A record may
derive figures from its own fields (summaries, counts, findings), never run a stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from decay_audit.classify import Classification
from decay_audit.findings import Finding, FindingKind, Outcome
from decay_audit.inventory import Inventory, VariableRecord
from decay_audit.kinds import Confidence, Kind, Preset
from decay_audit.policy import Decision, Policy, PolicyFindings

# --- scan ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScannedVariable:
    """One variable with its classification and decision."""

    record: VariableRecord
    """What the file said about the variable."""
    classification: Classification
    """What it is, with the evidence."""
    decision: Decision
    """Whether the policy decays it, and why."""

    def row(self) -> dict[str, Any]:
        """The one flat view of a scanned variable that JSON, CSV, Markdown and pandas share."""
        record, classification, decision = self.record, self.classification, self.decision
        return {
            "path": record.path,
            "leaf": record.leaf,
            "layer": record.layer,
            "layer_class": record.layer_class,
            "shape": [d if d is not None else -1 for d in record.shape],
            "dtype": record.dtype,
            "trainable": record.trainable if record.trainable_known else "unknown",
            "parameters": record.size,
            "kind": classification.kind.value,
            "decay": decision.decay,
            "confidence": classification.confidence.value,
            "evidence": list(classification.evidence),
            "conflicts": list(classification.conflicts),
            "reason": decision.reason,
            "origin": record.origin,
        }


@dataclass(frozen=True)
class KindSummary:
    """The variables of one kind."""

    kind: Kind
    variables: int
    """How many variables are of this kind."""
    parameters: int
    """Their elements, summed."""
    decayed: int
    """How many of them the policy decays."""


@dataclass(frozen=True)
class ScanSummary:
    """A scan's totals, as the table's footer and the JSON ``summary`` print them."""

    variables: int
    parameters: int
    decayed_variables: int
    decayed_parameters: int
    excluded_variables: int
    """Variables not decayed: excluded by the policy, or not trainable."""
    excluded_parameters: int
    low_confidence: int
    """Verdicts that rest on shape or position alone."""
    conflicting: int
    """Verdicts with evidence that points to another kind."""
    per_kind: tuple[KindSummary, ...]
    """One entry per kind present, in :class:`Kind` order."""


@dataclass(frozen=True)
class ScanReport:
    """What ``decay-audit scan`` found; every output format renders this object."""

    inventory: Inventory
    """Every variable the loader read, and its notes about the source."""
    variables: tuple[ScannedVariable, ...]
    """One entry per inventory record, in the same order."""
    policy: Policy
    """The preset and overrides the decisions were made under."""
    policy_findings: PolicyFindings = PolicyFindings()
    """Overrides that matched nothing, and variables two overrides disagreed on."""

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
                per_kind.append(
                    KindSummary(
                        kind,
                        len(members),
                        sum(v.record.size for v in members),
                        sum(1 for v in members if v.decision.decay),
                    )
                )
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
        """One row per variable (pandas, not a dependency of the light install; imported here so
        ``import decay_audit`` stays light)."""
        try:
            import pandas as pd
        except ImportError as exc:
            raise ImportError("ScanReport.to_dataframe() needs pandas: pip install pandas") from exc

        return pd.DataFrame([v.row() for v in self.variables])

    def strict_problems(self) -> int:
        """The count ``scan --strict`` fails on (one definition for one model and for many)."""
        summary = self.summary()
        return summary.low_confidence + summary.conflicting + len(self.policy_findings.dead_overrides)

    def saved_optimizer_findings(self) -> list[Finding]:
        """A saved compile config with weight_decay > 0 decays every variable after load_model,
        because Keras saves the optimizer's weight_decay but not its exclusions."""
        optimizer = self.inventory.optimizer
        if optimizer is None or not optimizer.weight_decay:
            return []
        wrongly = [v.record.path for v in self.variables if v.record.trainable and not v.decision.decay]
        if not wrongly:
            return []
        return [
            Finding(
                FindingKind.SAVED_OPTIMIZER,
                optimizer.class_name,
                f"the file's compile config has weight_decay={optimizer.weight_decay}; exclusions are not "
                f"saved, so training resumed after load_model decays all {len(wrongly)} excluded "
                f"variables: {sample(wrongly)}",
            )
        ]

    def policy_override_findings(self) -> list[Finding]:
        """Dead and conflicting overrides, one finding each."""
        findings = [
            Finding(FindingKind.POLICY, dead, "policy override matches no variable")
            for dead in self.policy_findings.dead_overrides
        ]
        findings += [
            Finding(FindingKind.POLICY, conflict.split(":")[0], conflict) for conflict in self.policy_findings.conflicts
        ]
        return findings

    def findings(self) -> list[Finding]:
        """What a scan reports as problems, one finding each: low-confidence and conflicting verdicts,
        dead or conflicting policy overrides, and a saved optimizer that decays everything. (``scan
        --strict`` exits 1 on the first three kinds; the saved optimizer is ``check``'s finding and
        only shown by scan.)"""
        findings = []
        for variable in self.variables:
            classification = variable.classification
            if classification.confidence is Confidence.LOW:
                findings.append(
                    Finding(
                        FindingKind.LOW_CONFIDENCE,
                        variable.record.path,
                        f"judged {classification.kind.value} from "
                        f"{'; '.join(classification.evidence[:2]) or 'no evidence'}",
                    )
                )
            if classification.conflicts:
                findings.append(
                    Finding(
                        FindingKind.CONFLICTING_EVIDENCE,
                        variable.record.path,
                        f"judged {classification.kind.value}, but {'; '.join(classification.conflicts)}",
                    )
                )
        findings.extend(self.policy_override_findings())
        findings.extend(self.saved_optimizer_findings())
        return findings


def sample(paths: Sequence[str], limit: int = 5) -> str:
    """The first few paths of a list, and how many more: findings stay one readable line."""
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


# --- scan of many models ---------------------------------------------------------------------


@dataclass(frozen=True)
class BatchItem:
    """One model of a multi-model scan: its report, or why it could not be read."""

    path: str
    """The model as discovered (a file, or a SavedModel directory)."""
    report: ScanReport | None
    """The scan report; None when the model could not be read."""
    error: str | None = None
    """One line naming the problem, when ``report`` is None."""


@dataclass(frozen=True)
class ModelCounts:
    """One model's summary row."""

    variables: int
    decayed: int
    excluded: int
    low_confidence: int
    findings: int
    """Findings as ``--format sarif`` reports them."""
    strict_problems: int
    """What ``--strict`` exits 1 on."""

    @classmethod
    def of(cls, report: ScanReport) -> ModelCounts:
        summary = report.summary()
        return cls(
            summary.variables,
            summary.decayed_variables,
            summary.excluded_variables,
            summary.low_confidence,
            len(report.findings()),
            report.strict_problems(),
        )


@dataclass(frozen=True)
class BatchTotals:
    """Sums over the models that could be read."""

    models: int
    """Models discovered (read or not)."""
    unreadable: int
    """Models that could not be read (each has an ``error``)."""
    variables: int
    decayed: int
    """Variables decayed under the policy."""
    excluded: int
    """Variables not decayed (excluded, or non-trainable)."""
    low_confidence: int
    findings: int
    """Findings as ``--format sarif`` reports them (low-confidence and conflicting verdicts, policy
    overrides, a saved optimizer that decays everything)."""
    strict_problems: int
    """What ``--strict`` exits 1 on: low-confidence and conflicting verdicts and dead overrides."""


@dataclass(frozen=True)
class BatchReport:
    """What ``decay-audit scan`` returns for several models: one item per model, in discovery order."""

    items: tuple[BatchItem, ...]

    @property
    def reports(self) -> tuple[ScanReport, ...]:
        return tuple(item.report for item in self.items if item.report is not None)

    @property
    def errors(self) -> tuple[BatchItem, ...]:
        return tuple(item for item in self.items if item.report is None)

    def totals(self) -> BatchTotals:
        rows = [ModelCounts.of(report) for report in self.reports]
        return BatchTotals(
            models=len(self.items),
            unreadable=len(self.errors),
            variables=sum(r.variables for r in rows),
            decayed=sum(r.decayed for r in rows),
            excluded=sum(r.excluded for r in rows),
            low_confidence=sum(r.low_confidence for r in rows),
            findings=sum(r.findings for r in rows),
            strict_problems=sum(r.strict_problems for r in rows),
        )


# --- rules and check ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Emitted:
    """A rule document in a target tool's language, as a target writes it."""

    document: dict[str, Any]
    """What the rule file holds (JSON or YAML)."""
    snippet: str = ""
    """Python that applies the rule; ``RULES_PATH`` stands for the rule file's path."""
    unexpressible: tuple[str, ...] = field(default_factory=tuple)
    """Paths the target cannot name (e.g. leaf unknown for a custom class)."""

    def snippet_for(self, rules_path: str) -> str:
        return self.snippet.replace("RULES_PATH", repr(rules_path))


@dataclass(frozen=True)
class RuleEmission:
    """A rule written for one target, and whether applying it selects exactly the intended set."""

    target: str
    """The target tool's name (``keras``, ``optax``)."""
    emitted: Emitted
    """The rule document, its snippet, and the variables the target's language cannot name."""
    wrongly_selected: tuple[str, ...]
    """Paths where the emitted rule, applied with the target's semantics, differs from the intent."""

    @property
    def document(self) -> dict[str, Any]:
        return self.emitted.document

    @property
    def unexpressible(self) -> tuple[str, ...]:
        return self.emitted.unexpressible

    @property
    def ok(self) -> bool:
        return not self.wrongly_selected and not self.unexpressible


@dataclass(frozen=True)
class PatternReport:
    """What one pattern of a user's rule selects."""

    pattern: str
    decays: bool
    """True for an include pattern, False for an exclusion."""
    paths: tuple[str, ...]
    """The trainable variables it matches, with the target's semantics."""


@dataclass(frozen=True)
class CheckReport:
    """What ``decay-audit check`` found in a user's rule."""

    source: str
    """The model the rule was applied to."""
    target: str
    """The target tool, with the backend for ``keras`` (``keras (tensorflow backend)``)."""
    patterns: tuple[PatternReport, ...]
    findings: tuple[Finding, ...]
    excluded: tuple[str, ...]
    """Every path the rule excludes, sorted."""


# --- verify ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurement:
    """What one trainable variable received over the probe, and the verdict."""

    path: str
    expected_decay: bool
    intent: str
    """Where the expectation came from (preset and kind, a rule file, an --expect glob)."""
    steps: int
    decoupled_steps: int
    """Steps in which a decoupled (optimizer) contribution was measured."""
    coupled_steps: int
    """Steps in which a coupled (penalty through the optimizer) contribution was measured."""
    decoupled_ratio: float | None
    """Measured decoupled shrink / configured lr_t*wd*w, averaged over steps that had it (1.0 = as configured)."""
    coupled_relative: float
    """What the optimizer made of the penalties: largest coupled change per step, relative to the
    variable's largest magnitude (under Adam this is the normalised update, not the penalty)."""
    outcome: Outcome
    detail: str
    decoupled_by: tuple[str, ...] = ()
    """The decoupled sources measured on this variable (``AdamW weight_decay=0.01``), per owning optimizer."""
    decoupled_rate: float | None = None
    """The configured relative shrink per step, lr_t * weight_decay, of those sources (first step)."""
    amplified: float | None = None
    """When the configured rate was below float32's resolution: the factor the twin amplified it by."""
    coupled_by: tuple[str, ...] = ()
    """The switchable coupled sources that reach this variable; ``hand-written step`` for penalties in a step's code."""
    penalty_gradient: float | None = None
    """The penalty's own gradient relative to the weight, <g, w> / <w, w> (2*l2 for Keras L2)."""
    hint: str | None = None
    """For a mismatch whose cause the set-up shows (exclusions on a LossScaleOptimizer wrapper, a
    ``var_names`` pattern that matches nothing on this backend, a regularizer under weight_decay):
    the likely cause and the fix, one line; None when the tool cannot tell. A verdict says what is
    wrong, and a user who sees it usually asks next what to change."""
    l1_steps: int = 0
    """Steps in which an L1 penalty (Ftrl ``l1_regularization_strength``, ``keras.regularizers.L1``, the
    L1 part of ``L1L2``) moved the variable. L1 drives weights to exactly zero (sparsity); it does not
    shrink them in proportion, so it is reported apart from decay unless ``count_l1``."""
    l1_by: tuple[str, ...] = ()
    """The L1 sources that reach this variable."""
    l1_relative: float = 0.0
    """Largest change the L1 penalties made in one step, relative to the variable's largest magnitude."""
    l1_counted: bool = False
    """``--count-l1``: the L1 part was judged as coupled decay (it can then make a double decay)."""
    ema_overwrite_steps: int = 0
    """Probe steps on which the optimizer replaced the weights by their moving average
    (``use_ema`` with ``ema_overwrite_frequency``): the decay rate is measured on the other steps."""

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def l1(self) -> str:
        """The ``l1`` column: ``yes`` when an L1 penalty moved the variable, ``counted`` under ``--count-l1``."""
        if not self.l1_steps:
            return ""
        return "counted" if self.l1_counted else "yes"

    @property
    def measured(self) -> str:
        if self.decoupled_steps and self.coupled_steps:
            return "decoupled+coupled"
        if self.decoupled_steps:
            return "decoupled"
        if self.coupled_steps:
            return "coupled"
        return "none"


@dataclass(frozen=True)
class ProbedStep:
    """One step of the probe, as training would have run it: what a reader needs to trust the
    per-step figures (under gradient accumulation or a warm-up from 0, some steps update nothing)."""

    index: int
    """1-based position in the probe."""
    learning_rates: tuple[float, ...]
    """The learning rate each optimizer's update used at this step (a schedule at its iteration), in
    the order the report names the optimizers."""
    updated: bool
    """The real step changed at least one trainable variable (False on an accumulating step, or at
    learning rate 0 with nothing else moving the weights)."""
    ema_overwrite: bool = False
    """The optimizer replaced the weights by their moving average after this step's update."""


@dataclass(frozen=True)
class VerifyReport:
    """What ``decay-audit verify`` measured: one :class:`Measurement` per trainable variable."""

    setup: str
    """The set-up's description (``train.py:make``, or the model's name)."""
    optimizer: str
    """The optimizer's class name (several joined with ``+``)."""
    weight_decay: float | None
    """The optimizer's configured ``weight_decay``, when it has one."""
    steps: int
    """Probe steps run."""
    device: str
    """Where the probe ran (``CPU``, ``GPU``)."""
    measurements: tuple[Measurement, ...]
    notes: tuple[str, ...] = ()
    """What the reader should know about how the probe ran."""
    dead_selectors: tuple[str, ...] = ()
    """Intent rules (--decay/--no-decay overrides, --expect-decay/--expect-no-decay globs) that matched no
    variable: the intent they were written for is not being checked (as scan and check report them)."""
    backend: str = "tensorflow"
    """The probe backend that ran the set-up's steps."""
    decay_sources: tuple[str, ...] = ()
    """Every decay knob found and switched in the twins (``AdamW weight_decay=0.01``, regularizers)."""
    probed_steps: tuple[ProbedStep, ...] = ()
    """Each probe step's learning rates, whether it updated, whether it was an EMA overwrite."""
    count_l1: bool = False
    """L1 penalties were judged as decay (``--count-l1``); by default they are reported apart."""

    @property
    def updated_steps(self) -> int:
        """How many probe steps changed the weights."""
        return sum(1 for s in self.probed_steps if s.updated)

    @property
    def mismatches(self) -> tuple[Measurement, ...]:
        return tuple(m for m in self.measurements if not m.ok)

    @property
    def ok(self) -> bool:
        return not self.mismatches
