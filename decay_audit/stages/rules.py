"""``rules`` and ``check``: emit rule files that provably select the intended set, and audit a user's rules.

Both directions go through the target's one ``apply`` (its tool's real matching
semantics): an emitted rule is applied to the inventory before it is written, and a
refusal names the variables it would get wrong; a user's rule is applied the same way
and every disagreement with the policy becomes a finding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decay_audit import user_regex
from decay_audit.findings import Finding, FindingKind
from decay_audit.kinds import KerasBackend
from decay_audit.results import CheckReport, PatternReport, RuleEmission, ScanReport, sample
from decay_audit.rules import TargetName, get_target
from decay_audit.rules.keras3 import Keras3Target


def emit_rules(report: ScanReport, target: str | TargetName) -> RuleEmission:
    """Emit, then verify by applying the rule with the target's semantics (for ``keras``: on
    every backend whose matching differs, since one rule file must work whichever backend trains)."""
    tool = get_target(target)
    emitted = tool.emit(report)
    records = [v.record for v in report.variables]
    intended = {v.record.path for v in report.variables if v.record.trainable and not v.decision.decay}
    wrong_set: set[str] = set()
    backends = (KerasBackend.TENSORFLOW, KerasBackend.JAX) if TargetName(target) is TargetName.KERAS else (None,)
    for backend in backends:
        semantics = get_target(target, keras_backend=backend) if backend else tool
        applied = semantics.apply(semantics.parse(emitted.document, f"emitted {tool.name} rule"), records)
        wrong_set |= applied.excluded ^ intended
    wrong = tuple(sorted(wrong_set - set(emitted.unexpressible)))
    return RuleEmission(tool.name, emitted, wrong)


def serialise_rules(document: dict[str, Any], path: Path | None) -> str:
    """A rule document as the file at ``path`` should hold it: YAML for ``.yaml``/``.yml``, else
    JSON; the same test by name as the reader's, so a written file always reads back."""
    from decay_audit.files import is_yaml

    if path is not None and is_yaml(path):
        import yaml

        return yaml.safe_dump(document, sort_keys=False)
    return json.dumps(document, indent=2) + "\n"


def rule_snippet(emission: RuleEmission, rules_path: Path | None) -> str:
    """The snippet that applies ``emission``'s rule, opening the rule file at ``rules_path``
    (``rules.json`` when the rule went to stdout: the name the snippet then assumes); empty for a
    target without one (native). It belongs on stderr or in a file of its own, never on stdout:
    stdout then holds the rule alone, so ``rules ... > rules.json`` stays a valid rule file."""
    if not emission.emitted.snippet:
        return ""
    return emission.emitted.snippet_for(str(rules_path) if rules_path is not None else "rules.json")


_DEAD_HINTS = {
    TargetName.KERAS: "Keras 3 matches the leaf (kernel, bias, gamma) on JAX/torch and 'path:0' on TensorFlow",
    TargetName.TF_KERAS: "tf_keras matches the full name with ':0' (dense/bias:0), case-sensitively",
    TargetName.MODEL_GARDEN: (
        "Model Garden matches the full name with ':0' (encoder/LayerNorm/gamma:0), case-sensitively"
    ),
}


def check_rules(
    report: ScanReport, target: str | TargetName, rule: Any, keras_backend: str | None = None
) -> CheckReport:
    """Apply a user's ``rule`` with ``target``'s semantics and report every disagreement with the policy."""
    target = TargetName(target)
    tool = get_target(target, keras_backend)
    records = [v.record for v in report.variables]
    with user_regex.budget(f"{target.value} rule", len(records)):
        applied = tool.apply(rule, records)
    findings: list[Finding] = []
    decided = report.by_path()
    for match in applied.matches:
        if not match.paths:
            findings.append(
                Finding(
                    FindingKind.DEAD_PATTERN,
                    match.pattern,
                    f"matches no trainable variable ({_DEAD_HINTS.get(target, 'check the names')})",
                )
            )
            continue
        wrong = [p for p in match.paths if decided[p].decision.decay != match.decays]
        if wrong:
            verb = "decays" if match.decays else "excludes"
            kinds = sorted({decided[p].classification.kind.value for p in wrong})
            findings.append(
                Finding(
                    FindingKind.OVER_BROAD,
                    match.pattern,
                    f"{verb} {len(wrong)} variable(s) the policy {'excludes' if match.decays else 'decays'} "
                    f"({', '.join(kinds)}): {sample(wrong)}",
                )
            )
    for variable in report.variables:
        record, decision = variable.record, variable.decision
        if not record.trainable:
            continue
        if not decision.decay and record.path not in applied.excluded:
            findings.append(
                Finding(
                    FindingKind.DECAYED_AGAINST_POLICY,
                    record.path,
                    f"{variable.classification.kind.value}: the rule lets the optimizer decay it",
                )
            )
        elif decision.decay and record.path in applied.excluded:
            findings.append(
                Finding(
                    FindingKind.EXCLUDED_AGAINST_POLICY,
                    record.path,
                    f"{variable.classification.kind.value}: the rule excludes it",
                )
            )
    findings.extend(report.saved_optimizer_findings())
    findings.extend(report.policy_override_findings())
    patterns = tuple(PatternReport(m.pattern, m.decays, m.paths) for m in applied.matches)
    label = f"{target.value} ({tool.backend} backend)" if isinstance(tool, Keras3Target) else target.value
    return CheckReport(report.source, label, patterns, tuple(findings), tuple(sorted(applied.excluded)))


def read_rule(
    target: str | TargetName, rules_file: Path | None, var_names: tuple[str, ...], keras_backend: str | None = None
) -> Any:
    """A user's rule, from a rule file or from the patterns as passed to the tool, parsed by the target."""
    from decay_audit.errors import UsageError
    from decay_audit.files import read_structured

    if (rules_file is None) == (not var_names):
        raise UsageError("check", "give exactly one of --rules FILE or --var-names PATTERN ...")
    tool = get_target(target, keras_backend)
    return tool.parse(read_structured(rules_file), str(rules_file)) if rules_file else tool.from_var_names(var_names)
