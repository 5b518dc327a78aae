"""What every rule target provides: emit a rule from decisions, and apply a rule the tool's way.

Each target's matching semantics live in exactly one function (``excluded``), copied from
the tool's source, and are used both to verify what decay-audit emits and to check
a user's existing rule, so the two can never disagree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from decay_audit.errors import UsageError
from decay_audit.inventory import VariableRecord
from decay_audit.results import Emitted, ScanReport


@dataclass(frozen=True)
class Match:
    """Which trainable variables one pattern (or list entry) of a rule selects."""

    pattern: str
    paths: tuple[str, ...]
    decays: bool = False
    """True for inclusion patterns (Model Garden ``include_in_weight_decay``, optax mask True)."""


@dataclass(frozen=True)
class Applied:
    """A rule applied to a model with the target tool's semantics."""

    excluded: frozenset[str]
    """Paths of trainable variables the tool would NOT decay."""
    matches: tuple[Match, ...] = ()
    """Per pattern, what it selects (for dead / over-broad pattern findings)."""


class Target(Protocol):
    name: str
    description: str
    source: str
    """Where the semantics were copied from (tool version and file)."""

    def emit(self, report: ScanReport) -> Emitted:
        """The rule that excludes what ``report``'s decisions exclude, in this tool's language."""

    def parse(self, document: Any, subject: str) -> Any: ...

    def from_var_names(self, names: Sequence[str]) -> Any: ...

    def apply(self, rule: Any, records: Sequence[VariableRecord]) -> Applied: ...


@dataclass(frozen=True)
class Exclusion:
    """One trainable variable the policy excludes, and how a name-matching tool could select it."""

    record: VariableRecord
    whole_leaf: bool
    """Every trainable variable with this leaf is excluded: one leaf pattern selects exactly them."""


def exclusions(records: Sequence[VariableRecord], decay: Sequence[bool]) -> tuple[list[Exclusion], list[str]]:
    """Excluded trainable variables in order, and the paths no name can select (leaf unknown)."""
    candidates = [(r, d) for r, d in zip(records, decay) if r.trainable]
    decayed_leaves = {r.leaf for r, d in candidates if d}
    found, unexpressible = [], []
    for record, decayed in candidates:
        if decayed:
            continue
        if not record.leaf_known:
            unexpressible.append(record.path)
        else:
            found.append(Exclusion(record, record.leaf not in decayed_leaves))
    return found, unexpressible


def compile_pattern(pattern: str, subject: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise UsageError(subject, f"invalid regular expression {pattern!r} ({exc})") from None


def trainable(records: Sequence[VariableRecord]) -> list[VariableRecord]:
    """Optimizers only ever see trainable variables."""
    return [r for r in records if r.trainable]


def decisions(report: ScanReport) -> tuple[list[VariableRecord], list[bool]]:
    """Every variable of a scan and whether the policy decays it, in the inventory's order."""
    return [v.record for v in report.variables], [v.decision.decay for v in report.variables]
