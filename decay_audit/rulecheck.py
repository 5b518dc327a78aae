"""Emit rule files that provably select the intended set, and audit a user's existing rules.

Both directions go through the target's one ``apply`` (its tool's real matching
semantics): an emitted rule is applied to the inventory before it is written, and a
refusal names the variables it would get wrong; a user's rule is applied the same way
and every disagreement with the policy becomes a finding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from decay_audit import user_regex
from decay_audit.audit import ScanReport
from decay_audit.kinds import TextEnum
from decay_audit.rules import TargetName, get_target
from decay_audit.rules.interface import Emitted


@dataclass(frozen=True)
class RuleEmission:
    target: str
    emitted: Emitted
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


def emit_rules(report: ScanReport, target: str | TargetName) -> RuleEmission:
    """Emit, then verify by applying the rule with the target's semantics (for ``keras``: on
    every backend, since one rule file must work whichever backend trains)."""
    tool = get_target(target)
    records = [v.record for v in report.variables]
    decay = [v.decision.decay for v in report.variables]
    if TargetName(target) is TargetName.NATIVE:
        emitted = tool.emit(records, decay, policy=report.policy.to_dict(),
                            kinds=[v.classification.kind.value for v in report.variables])
    else:
        emitted = tool.emit(records, decay)
    intended = {r.path for r, d in zip(records, decay) if r.trainable and not d}
    wrong_set: set[str] = set()
    backends = ("tensorflow", "jax") if TargetName(target) is TargetName.KERAS else (None,)
    for backend in backends:
        semantics = get_target(target, keras_backend=backend) if backend else tool
        applied = semantics.apply(semantics.parse(emitted.document, f"emitted {tool.name} rule"), records)
        wrong_set |= applied.excluded ^ intended
    wrong = tuple(sorted(wrong_set - set(emitted.unexpressible)))
    return RuleEmission(tool.name, emitted, wrong)


class FindingKind(TextEnum):
    DEAD_PATTERN = "dead-pattern"
    OVER_BROAD = "over-broad"
    DECAYED_AGAINST_POLICY = "decayed-against-policy"
    EXCLUDED_AGAINST_POLICY = "excluded-against-policy"
    SAVED_OPTIMIZER = "saved-optimizer-decays-all"
    POLICY = "policy"
    LOW_CONFIDENCE = "low-confidence"
    """scan only: the kind rests on shape or position alone."""
    CONFLICTING_EVIDENCE = "conflicting-evidence"
    """scan only: some evidence points to another kind than the verdict."""



@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    subject: str
    detail: str


@dataclass(frozen=True)
class PatternReport:
    pattern: str
    decays: bool
    paths: tuple[str, ...]


@dataclass(frozen=True)
class CheckReport:
    source: str
    target: str
    patterns: tuple[PatternReport, ...]
    findings: tuple[Finding, ...]
    excluded: tuple[str, ...]


_DEAD_HINTS = {
    TargetName.KERAS: "Keras 3 matches the leaf (kernel, bias, gamma) on JAX/torch and 'path:0' on TensorFlow",
    TargetName.TF_KERAS: "tf_keras matches the full name with ':0' (dense/bias:0), case-sensitively",
    TargetName.MODEL_GARDEN: "Model Garden matches the full name with ':0' (encoder/LayerNorm/gamma:0), case-sensitively",
}


def check_rules(report: ScanReport, target: str | TargetName, rule: Any, keras_backend: str | None = None) -> CheckReport:
    target = TargetName(target)
    tool = get_target(target, keras_backend)
    records = [v.record for v in report.variables]
    with user_regex.budget(f"{target.value} rule", len(records)):
        applied = tool.apply(rule, records)
    findings: list[Finding] = []
    decided = {v.record.path: v for v in report.variables}
    for match in applied.matches:
        if not match.paths:
            findings.append(Finding(FindingKind.DEAD_PATTERN, match.pattern,
                                    f"matches no trainable variable ({_DEAD_HINTS.get(target, 'check the names')})"))
            continue
        wrong = [p for p in match.paths if decided[p].decision.decay != match.decays]
        if wrong:
            verb = "decays" if match.decays else "excludes"
            kinds = sorted({decided[p].classification.kind.value for p in wrong})
            findings.append(Finding(FindingKind.OVER_BROAD, match.pattern,
                                    f"{verb} {len(wrong)} variable(s) the policy {'excludes' if match.decays else 'decays'} "
                                    f"({', '.join(kinds)}): {_sample(wrong)}"))
    for variable in report.variables:
        record, decision = variable.record, variable.decision
        if not record.trainable:
            continue
        if not decision.decay and record.path not in applied.excluded:
            findings.append(Finding(FindingKind.DECAYED_AGAINST_POLICY, record.path,
                                    f"{variable.classification.kind.value}: the rule lets the optimizer decay it"))
        elif decision.decay and record.path in applied.excluded:
            findings.append(Finding(FindingKind.EXCLUDED_AGAINST_POLICY, record.path,
                                    f"{variable.classification.kind.value}: the rule excludes it"))
    findings.extend(saved_optimizer_findings(report))
    for dead in report.policy_findings.dead_overrides:
        findings.append(Finding(FindingKind.POLICY, dead, "policy override matches no variable"))
    for conflict in report.policy_findings.conflicts:
        findings.append(Finding(FindingKind.POLICY, conflict.split(":")[0], conflict))
    patterns = tuple(PatternReport(m.pattern, m.decays, m.paths) for m in applied.matches)
    label = f"{target.value} ({tool.backend} backend)" if target is TargetName.KERAS else target.value
    return CheckReport(report.source, label, patterns, tuple(findings), tuple(sorted(applied.excluded)))


def saved_optimizer_findings(report: ScanReport) -> list[Finding]:
    """A saved compile config with weight_decay > 0 decays every variable after load_model (FACTS)."""
    optimizer = report.inventory.optimizer
    if optimizer is None or not optimizer.weight_decay:
        return []
    wrongly = [v.record.path for v in report.variables if v.record.trainable and not v.decision.decay]
    if not wrongly:
        return []
    return [Finding(FindingKind.SAVED_OPTIMIZER, optimizer.class_name,
                    f"the file's compile config has weight_decay={optimizer.weight_decay}; exclusions are not saved, "
                    f"so training resumed after load_model decays all {len(wrongly)} excluded variables: "
                    f"{_sample(wrongly)}")]


def scan_findings(report: ScanReport) -> list[Finding]:
    """What a scan reports as problems, one finding each: low-confidence and conflicting verdicts,
    dead or conflicting policy overrides, and a saved optimizer that decays everything. (``scan
    --strict`` exits 1 on the first three kinds; the saved optimizer is ``check``'s finding and
    only shown by scan.)"""
    from decay_audit.kinds import Confidence

    findings = []
    for variable in report.variables:
        classification = variable.classification
        if classification.confidence is Confidence.LOW:
            findings.append(Finding(FindingKind.LOW_CONFIDENCE, variable.record.path,
                                    f"judged {classification.kind.value} from "
                                    f"{'; '.join(classification.evidence[:2]) or 'no evidence'}"))
        if classification.conflicts:
            findings.append(Finding(FindingKind.CONFLICTING_EVIDENCE, variable.record.path,
                                    f"judged {classification.kind.value}, but {'; '.join(classification.conflicts)}"))
    for dead in report.policy_findings.dead_overrides:
        findings.append(Finding(FindingKind.POLICY, dead, "policy override matches no variable"))
    for conflict in report.policy_findings.conflicts:
        findings.append(Finding(FindingKind.POLICY, conflict.split(":")[0], conflict))
    findings.extend(saved_optimizer_findings(report))
    return findings


def _sample(paths: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" and {len(paths) - limit} more" if len(paths) > limit else "")
