"""What decay-audit reports as a problem: one vocabulary of findings and their SARIF rules.

Every finding type has one :class:`SarifRule` whose id never changes meaning, because code
scanning matches alerts across runs by it. ``scan`` and ``check`` report :class:`FindingKind`
values, ``verify`` reports :class:`Outcome` values; both map onto the same rule table here,
so a new finding type is one enum member plus one rule.
"""

from __future__ import annotations

from dataclasses import dataclass

from decay_audit.kinds import TextEnum


class FindingKind(TextEnum):
    """A problem ``check`` (and, for some kinds, ``scan``) reports about a model and its rules."""

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


class Outcome(TextEnum):
    """``verify``'s verdict on one variable: what was measured against what was intended."""

    OK = "ok"
    DOUBLE_DECAY = "double-decay"
    """Decay from two sources on one variable: decoupled and coupled, or two optimizers' decay."""
    NOT_DECAYED = "not-decayed"
    """Intended to decay, but no decay was measured in any probe step."""
    DECAYED_AGAINST_INTENT = "decayed-against-intent"
    RATE_MISMATCH = "rate-mismatch"
    """Decoupled decay present, but not lr_t * weight_decay * w."""
    STALE_STEP = "stale-step"
    """Frozen now, yet updated by the step ``fit`` will run next: it was traced before the freeze."""
    REPLICAS_DISAGREE = "replicas-disagree"
    """Under a distribution strategy, the replicas of one variable hold different values after a step."""


@dataclass(frozen=True)
class Finding:
    """One problem found by ``scan`` or ``check``."""

    kind: FindingKind
    subject: str
    """The variable path, pattern or optimizer class the finding is about."""
    detail: str
    """One sentence a reader can act on."""


@dataclass(frozen=True)
class SarifRule:
    """One finding type: what code scanning lists as a rule."""

    id: str
    """Stable id (``DA001``); code scanning matches results across runs by it."""
    name: str
    """The finding's name in decay-audit's own vocabulary (``dead-pattern``)."""
    short: str
    """One line shown next to the alert."""
    help: str
    """What it means and what to do."""
    level: str
    """Default SARIF level: ``error`` fails a check, ``warning`` asks for a human look."""


RULES: tuple[SarifRule, ...] = (
    SarifRule(
        "DA001",
        "dead-pattern",
        "An exclusion pattern matches no variable",
        "The rule's pattern selects nothing in the model, so whatever it was meant to exclude is decayed. "
        "Keras 3 matches the leaf on JAX/torch but 'path:0' on TensorFlow; tf_keras matches 'dense/bias:0'. "
        "Regenerate the rule with `decay-audit rules MODEL --target T`.",
        "error",
    ),
    SarifRule(
        "DA002",
        "over-broad-pattern",
        "A pattern also selects variables the policy treats the other way",
        "The pattern matches kernels or embeddings the policy decays (or, for an include pattern, "
        "variables it excludes). Anchor the pattern, or use `decay-audit rules` to emit one.",
        "error",
    ),
    SarifRule(
        "DA003",
        "decayed-against-policy",
        "A variable gets weight decay that the policy excludes",
        "A bias, normalization gain/offset, embedding or other excluded variable is decayed by the "
        "rule (check) or was measured to shrink in a training step (verify).",
        "error",
    ),
    SarifRule(
        "DA004",
        "excluded-against-policy",
        "A variable the policy decays is excluded by the rule",
        "The rule excludes a variable the policy intends to decay.",
        "error",
    ),
    SarifRule(
        "DA005",
        "double-decay",
        "Both decoupled and coupled decay reach one variable",
        "The optimizer's weight_decay and a penalty in the loss (kernel_regularizer, an L2 term) both "
        "shrink this variable: it is decayed twice. Keep one of them.",
        "error",
    ),
    SarifRule(
        "DA006",
        "never-switched-on",
        "A variable meant to decay received no decay in any probe step",
        "weight_decay is 0 or unset, the variable is excluded by mistake, or the training step bypasses the "
        "optimizer's decay (e.g. a wrapper that drops exclude_from_weight_decay).",
        "error",
    ),
    SarifRule(
        "DA007",
        "saved-optimizer-decays-all",
        "The saved optimizer decays every variable after load_model",
        "The file's compile config has weight_decay > 0; exclusions are not saved, so training resumed "
        "after keras.saving.load_model decays every variable, biases and norms included.",
        "error",
    ),
    SarifRule(
        "DA008",
        "low-confidence",
        "A variable's kind rests on shape or position alone",
        "decay-audit could not read the variable's role from a known layer class or a naming convention. "
        "Check the verdict, or pin it with --decay/--no-decay.",
        "warning",
    ),
    SarifRule(
        "DA009",
        "conflicting-evidence",
        "Evidence about a variable's kind disagrees",
        "Some evidence points to another kind than the verdict. Worth a human look.",
        "warning",
    ),
    SarifRule(
        "DA010",
        "policy-override",
        "A policy override matches nothing, or two overrides conflict",
        "A --decay/--no-decay selector or policy-file override selects no variable (a typo, or a model "
        "that changed), or a decay and a no-decay override both select a variable (no-decay wins).",
        "warning",
    ),
    SarifRule(
        "DA011",
        "rate-mismatch",
        "Decoupled decay is present, but not lr_t * weight_decay * w",
        "The measured shrink per step differs from the configured rate: a schedule, a wrapper or a "
        "second optimizer changes it.",
        "error",
    ),
    SarifRule(
        "DA012",
        "verify-mismatch",
        "The measured decay differs from the intent",
        "A verify verdict other than the ones above.",
        "error",
    ),
    SarifRule(
        "DA013",
        "stale-step",
        "fit reuses a step traced before a layer was frozen",
        "layer.trainable was set to False after fit without compile(): Keras keeps the traced train "
        "function, which still updates and decays the frozen layer's variables (and BatchNormalization "
        "statistics). Call compile() again after changing trainable.",
        "error",
    ),
    SarifRule(
        "DA014",
        "replicas-disagree",
        "The replicas of a distributed variable differ after a step",
        "Under a distribution strategy each replica should apply the same update; replicas that differ "
        "train different models (an update applied outside the strategy's replica context, or a "
        "per-replica decay).",
        "error",
    ),
)
"""Every finding type decay-audit reports, in one place; ids never change meaning."""

_BY_NAME = {rule.name: rule for rule in RULES}

RULE_INDEX = {rule.id: index for index, rule in enumerate(RULES)}
"""Rule id → its position in :data:`RULES` (SARIF's ``ruleIndex``)."""

_FINDING_RULES: dict[FindingKind, str] = {
    FindingKind.DEAD_PATTERN: "dead-pattern",
    FindingKind.OVER_BROAD: "over-broad-pattern",
    FindingKind.DECAYED_AGAINST_POLICY: "decayed-against-policy",
    FindingKind.EXCLUDED_AGAINST_POLICY: "excluded-against-policy",
    FindingKind.SAVED_OPTIMIZER: "saved-optimizer-decays-all",
    FindingKind.POLICY: "policy-override",
    FindingKind.LOW_CONFIDENCE: "low-confidence",
    FindingKind.CONFLICTING_EVIDENCE: "conflicting-evidence",
}

_OUTCOME_RULES: dict[Outcome, str] = {
    Outcome.DOUBLE_DECAY: "double-decay",
    Outcome.NOT_DECAYED: "never-switched-on",
    Outcome.DECAYED_AGAINST_INTENT: "decayed-against-policy",
    Outcome.RATE_MISMATCH: "rate-mismatch",
    Outcome.STALE_STEP: "stale-step",
    Outcome.REPLICAS_DISAGREE: "replicas-disagree",
}


def rule_named(name: str) -> SarifRule:
    """The rule whose ``name`` is ``name`` (KeyError for a name not in :data:`RULES`)."""
    return _BY_NAME[name]


def rule_for(finding: FindingKind | Outcome) -> SarifRule:
    """The SARIF rule of a finding kind or a failing verify outcome (any outcome without a rule
    of its own is ``verify-mismatch``)."""
    if isinstance(finding, FindingKind):
        return _BY_NAME[_FINDING_RULES[finding]]
    return _BY_NAME[_OUTCOME_RULES.get(finding, "verify-mismatch")]
