"""Baselines: findings a team has looked at and accepted, so ``--strict`` can gate only new ones.

A model with custom layers has low-confidence verdicts that no flag can raise; without a baseline,
``scan --strict`` exits 1 on it forever and CI learns to ignore the job. ``--write-baseline FILE``
records today's findings; ``--baseline FILE`` then reports, and fails on, only findings not in it.

Each finding is identified by a fingerprint of its kind, its subject (the variable path, pattern or
selector) and the model's path relative to the baseline file, never by its wording: a detail that
changes between releases ("judged kernel from ...") must not turn an accepted finding into a new one,
and a repository checked out elsewhere must match the same baseline.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decay_audit.errors import UsageError
from decay_audit.findings import Finding, FindingKind
from decay_audit.results import BatchItem, BatchReport, CheckReport, ScanReport

VERSION = 1
"""The baseline file format; a file of another version is refused rather than half-understood."""

_ENTRY_KEYS = ("fingerprint", "kind", "subject", "model")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def model_key(model: str | os.PathLike[str], baseline: str | os.PathLike[str]) -> str:
    """``model`` relative to the baseline file's directory, with ``/`` separators: the same key
    wherever the repository is checked out. Symlinks are kept as written (not resolved)."""
    model_path = os.path.abspath(model)
    directory = os.path.dirname(os.path.abspath(baseline))
    try:
        return Path(os.path.relpath(model_path, directory)).as_posix()
    except ValueError:  # another drive on Windows: no relative path exists
        return Path(model_path).as_posix()


def fingerprint(kind: str, subject: str, model: str) -> str:
    """The stable identity of one finding (``model`` as :func:`model_key` gives it)."""
    return hashlib.sha256("\0".join((str(kind), subject, model)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Baseline:
    """The accepted findings of one baseline file."""

    path: Path
    fingerprints: frozenset[str]

    def knows(self, finding: Finding, model: str | os.PathLike[str]) -> bool:
        return fingerprint(finding.kind, finding.subject, model_key(model, self.path)) in self.fingerprints

    def split(self, findings: Iterable[Finding], model: str | os.PathLike[str]) -> tuple[list[Finding], list[Finding]]:
        """(new, baselined), each in the order given."""
        new: list[Finding] = []
        known: list[Finding] = []
        for finding in findings:
            (known if self.knows(finding, model) else new).append(finding)
        return new, known


def read_baseline(path: str | os.PathLike[str]) -> Baseline:
    """A baseline file, validated: anything unexpected is one error naming the file and the problem."""
    from decay_audit.files import read_structured

    path = Path(path)
    document = read_structured(path)
    if not isinstance(document, dict) or "version" not in document:
        raise UsageError(str(path), "not a decay-audit baseline (expected a JSON object with a version field)")
    unknown = sorted(set(document) - {"version", "tool", "findings"})
    if unknown:
        raise UsageError(str(path), f"unknown key {unknown[0]!r} in the baseline")
    version = document["version"]
    if version != VERSION or isinstance(version, bool):
        raise UsageError(str(path), f"baseline version {version!r} is not supported (this decay-audit reads {VERSION})")
    entries = document.get("findings")
    if not isinstance(entries, list):
        raise UsageError(str(path), "baseline 'findings' must be a list")
    fingerprints = set()
    for index, entry in enumerate(entries):
        where = f"findings[{index}]"
        if not isinstance(entry, dict):
            raise UsageError(str(path), f"{where} must be an object")
        for key in _ENTRY_KEYS:
            if not isinstance(entry.get(key), str):
                raise UsageError(str(path), f"{where} needs a string {key!r}")
        if not _HEX64.fullmatch(entry["fingerprint"]):
            raise UsageError(str(path), f"{where}: fingerprint is not 64 lowercase hex digits")
        if entry["fingerprint"] != fingerprint(entry["kind"], entry["subject"], entry["model"]):
            raise UsageError(
                str(path),
                f"{where}: fingerprint does not match its kind, subject and model (edited by hand? "
                "regenerate with --write-baseline)",
            )
        fingerprints.add(entry["fingerprint"])
    return Baseline(path, frozenset(fingerprints))


def baseline_text(findings: Iterable[tuple[str | os.PathLike[str], Finding]], path: str | os.PathLike[str]) -> str:
    """The baseline file for (model, finding) pairs, sorted and without a timestamp, so that
    re-running on unchanged models writes the same bytes and a review diff shows only changes."""
    entries: dict[str, dict[str, Any]] = {}
    for model, finding in findings:
        key = model_key(model, path)
        digest = fingerprint(finding.kind, finding.subject, key)
        entries.setdefault(
            digest,
            {
                "fingerprint": digest,
                "kind": finding.kind.value,
                "subject": finding.subject,
                "model": key,
                "detail": finding.detail,
            },
        )
    ordered = sorted(entries.values(), key=lambda e: (e["model"], e["kind"], e["subject"]))
    document = {"version": VERSION, "tool": "decay-audit", "findings": ordered}
    return json.dumps(document, indent=2, ensure_ascii=True) + "\n"


def write_baseline_file(
    path: str | os.PathLike[str], findings: Iterable[tuple[str | os.PathLike[str], Finding]], option: str
) -> Baseline:
    """Write the baseline atomically and return it as :func:`read_baseline` would read it."""
    from decay_audit.files import write_atomically

    text = baseline_text(findings, path)
    write_atomically(path, text, option)
    return Baseline(Path(path), frozenset(entry["fingerprint"] for entry in json.loads(text)["findings"]))


# --- reports seen through a baseline -----------------------------------------------------------

_STRICT_VARIABLE_KINDS = frozenset({FindingKind.LOW_CONFIDENCE, FindingKind.CONFLICTING_EVIDENCE})


@dataclass(frozen=True)
class BaselinedScanReport(ScanReport):
    """A scan report whose findings, strict count and SARIF results leave out the baselined ones.

    A subclass rather than a filtered copy: the variables, summary and JSON rows stay the whole
    model (a baseline accepts a finding, it does not hide a variable), while every consumer that
    asks for :meth:`findings` or :meth:`strict_problems` (SARIF, the many-model table, ``--strict``)
    sees only what is new."""

    baseline: Baseline | None = None
    model: str = ""
    """The model path the fingerprints are computed from (as the command was given it)."""

    def _split(self) -> tuple[list[Finding], list[Finding]]:
        findings = super().findings()
        if self.baseline is None:
            return findings, []
        return self.baseline.split(findings, self.model)

    def findings(self) -> list[Finding]:
        return self._split()[0]

    def baselined(self) -> list[Finding]:
        """The findings the baseline accepts."""
        return self._split()[1]

    def strict_problems(self) -> int:
        dead = {str(d) for d in self.policy_findings.dead_overrides}
        accepted = sum(
            1
            for f in self.baselined()
            if f.kind in _STRICT_VARIABLE_KINDS
            or (f.kind is FindingKind.POLICY and f.subject in dead and "matches no variable" in f.detail)
        )
        return super().strict_problems() - accepted


def through_baseline(report: ScanReport, baseline: Baseline | None, model: str | os.PathLike[str]) -> ScanReport:
    """``report`` as ``baseline`` sees it (unchanged without one)."""
    if baseline is None:
        return report
    fields = {f.name: getattr(report, f.name) for f in dataclasses.fields(ScanReport)}
    return BaselinedScanReport(**fields, baseline=baseline, model=os.fspath(model))


def batch_through_baseline(batch: BatchReport, baseline: Baseline | None) -> BatchReport:
    if baseline is None:
        return batch
    return BatchReport(
        tuple(
            BatchItem(item.path, through_baseline(item.report, baseline, item.path), item.error)
            if item.report is not None
            else item
            for item in batch.items
        )
    )


def check_through_baseline(
    result: CheckReport, baseline: Baseline | None, model: str | os.PathLike[str]
) -> tuple[CheckReport, int]:
    """The check report without baselined findings, and how many were left out."""
    if baseline is None:
        return result, 0
    new, known = baseline.split(result.findings, model)
    return dataclasses.replace(result, findings=tuple(new)), len(known)


def baselined_count(report: ScanReport | BatchReport) -> int:
    """How many findings the baseline accepted, for the one line that says so."""
    reports: Sequence[ScanReport] = report.reports if isinstance(report, BatchReport) else (report,)
    return sum(len(r.baselined()) for r in reports if isinstance(r, BaselinedScanReport))


def all_findings(report: ScanReport | BatchReport, model: str | os.PathLike[str] = "") -> list[tuple[str, Finding]]:
    """(model, finding) for every finding, baselined or not: what ``--write-baseline`` records."""
    if isinstance(report, BatchReport):
        return [
            pair for item in report.items if item.report is not None for pair in all_findings(item.report, item.path)
        ]
    if isinstance(report, BaselinedScanReport):
        return [(os.fspath(model), f) for f in ScanReport.findings(report)]
    return [(os.fspath(model), f) for f in report.findings()]
