"""``--format sarif``: SARIF 2.1.0 for code-scanning tools (GitHub, GitLab, VS Code).

One rule per finding type, from the one table in :mod:`decay_audit.findings`. Every result names the file
it is about as a physical location and, where a variable or pattern is the subject, that
name as a logical location. The output validates against the OASIS SARIF 2.1.0 schema
shipped in ``decay_audit/schemas/sarif-schema-2.1.0.json`` (tests/test_sarif.py).

Two choices made for GitHub code scanning, whose upload rejects or mis-files otherwise:
every physical location carries ``region.startLine`` (line 1 for a model file, which has
no lines; the function's line for a set-up file), and every result carries
``partialFingerprints`` computed here, so the uploader never tries to fingerprint a binary
model file by reading its "lines".
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decay_audit.findings import RULE_INDEX, RULES, FindingKind, Outcome, rule_for
from decay_audit.results import BatchReport, CheckReport, ScanReport, VerifyReport

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/decay-audit/"


# --- locations ---------------------------------------------------------------------------


def _uri(path: str | os.PathLike) -> tuple[str, str | None]:
    """A path under the working directory as a relative URI against %SRCROOT% (what code
    scanning resolves against the checkout), anything else as an absolute file URI."""
    resolved = Path(path).resolve()
    try:
        relative = resolved.relative_to(Path.cwd().resolve())
    except ValueError:
        return resolved.as_uri(), None
    from urllib.parse import quote

    return quote(relative.as_posix()), "%SRCROOT%"


def physical(path: str | os.PathLike, line: int = 1) -> dict:
    uri, base = _uri(path)
    artifact = {"uri": uri, **({"uriBaseId": base} if base else {})}
    return {"artifactLocation": artifact, "region": {"startLine": max(1, int(line))}}


def function_line(path: str | os.PathLike, function: str) -> int:
    """The line of ``def function`` in a Python file, read with ``ast`` (the file is not imported
    again); 1 when it is not found at module level."""
    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return 1
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            return node.lineno
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == function for t in node.targets):
            return node.lineno
    return 1


@dataclass(frozen=True)
class Result:
    """One finding, before it becomes a SARIF result object."""

    rule: FindingKind | Outcome
    """The finding type; :func:`~decay_audit.findings.rule_for` gives its SARIF rule."""
    message: str
    location: dict
    """A SARIF physicalLocation."""
    subject: str | None = None
    """The variable path or pattern the finding is about (a logical location)."""
    subject_kind: str = "variable"
    """SARIF logicalLocation kind: ``variable`` for a weight, ``value`` for a rule pattern."""
    related: tuple[dict, ...] = ()
    """Further physicalLocations (the model behind a rule-file finding)."""


def _result(result: Result) -> dict:
    rule = rule_for(result.rule)
    location: dict[str, Any] = {"physicalLocation": result.location}
    if result.subject is not None:
        location["logicalLocations"] = [
            {"name": result.subject, "fullyQualifiedName": result.subject, "kind": result.subject_kind}
        ]
    fingerprint = hashlib.sha256(
        "\0".join((rule.id, result.location["artifactLocation"]["uri"], result.subject or "")).encode()
    ).hexdigest()
    document = {
        "ruleId": rule.id,
        "ruleIndex": RULE_INDEX[rule.id],
        "level": rule.level,
        "message": {"text": result.message},
        "locations": [location],
        "partialFingerprints": {"decayAudit/v1": fingerprint},
    }
    if result.related:
        document["relatedLocations"] = [
            {"id": index + 1, "physicalLocation": related} for index, related in enumerate(result.related)
        ]
    return document


def sarif_log(results: Iterable[Result], analysed: Sequence[dict] = (), command: str = "") -> str:
    """The SARIF document: one run, every rule listed, one result per finding."""
    from decay_audit import __version__ as tool_version

    rules = [
        {
            "id": rule.id,
            "name": rule.name,
            "shortDescription": {"text": rule.short},
            "fullDescription": {"text": rule.help},
            "help": {"text": rule.help},
            "defaultConfiguration": {"level": rule.level},
        }
        for rule in RULES
    ]
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "decay-audit",
                "version": tool_version,
                "semanticVersion": tool_version,
                "informationUri": INFORMATION_URI,
                "rules": rules,
            }
        },
        "results": [_result(r) for r in results],
        "columnKind": "unicodeCodePoints",
        "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().resolve().as_uri() + "/"}},
    }
    if analysed:
        run["artifacts"] = [
            {"location": location["artifactLocation"], "roles": ["analysisTarget"]} for location in analysed
        ]
    if command:
        run["automationDetails"] = {"id": f"decay-audit/{command}/"}
    log = {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}
    return json.dumps(log, indent=2, ensure_ascii=True) + "\n"


# --- scan --------------------------------------------------------------------------------

_VARIABLE_FINDINGS = frozenset({FindingKind.LOW_CONFIDENCE, FindingKind.CONFLICTING_EVIDENCE})


def scan_results(report: ScanReport) -> list[Result]:
    """The problems ``scan --strict`` fails on, plus a saved optimizer that decays everything."""
    location = physical(report.source)
    return [
        Result(
            f.kind,
            f"{f.subject}: {f.detail}",
            location,
            f.subject,
            "variable" if f.kind in _VARIABLE_FINDINGS else "value",
        )
        for f in report.findings()
    ]


def scan_sarif(report: ScanReport, **_: Any) -> str:
    return sarif_log(scan_results(report), [physical(report.source)], "scan")


def batch_sarif(batch: BatchReport, **_: Any) -> str:
    """Several models in one run: each result located in its own model file."""
    results, analysed = [], []
    for item in batch.items:
        analysed.append(physical(item.path))
        if item.report is not None:
            results += scan_results(item.report)
    return sarif_log(results, analysed, "scan")


# --- check -------------------------------------------------------------------------------

_PATTERN_KINDS = frozenset({FindingKind.DEAD_PATTERN, FindingKind.OVER_BROAD})


def check_sarif(
    result: CheckReport, model: str | os.PathLike | None = None, rules: str | os.PathLike | None = None, **_: Any
) -> str:
    """Pattern findings sit in the rule file when there is one (that is what a reviewer edits),
    with the model as a related location; variable findings sit in the model file."""
    model_location = physical(model if model is not None else result.source)
    rules_location = physical(rules) if rules is not None else None
    results = []
    for finding in result.findings:
        kind = finding.kind
        on_rule_file = rules_location is not None and kind in _PATTERN_KINDS
        results.append(
            Result(
                kind,
                f"{finding.subject}: {finding.detail} ({result.target} rule)",
                rules_location if rules_location is not None and on_rule_file else model_location,
                finding.subject,
                "value" if kind in _PATTERN_KINDS or kind is FindingKind.POLICY else "variable",
                (model_location,) if on_rule_file else (),
            )
        )
    analysed = [model_location] + ([rules_location] if rules_location else [])
    return sarif_log(results, analysed, "check")


# --- verify ------------------------------------------------------------------------------


def verify_location(setup: str | None = None, model: str | os.PathLike[str] | None = None) -> dict[str, Any] | None:
    """The set-up file at the line of its function (``train.py:make``), or the model file."""
    if setup:
        path, _, function = str(setup).rpartition(":")
        return physical(path, function_line(path, function))
    if model is not None:
        return physical(model)
    return None


def verify_sarif(
    report: VerifyReport, setup: str | None = None, model: str | os.PathLike | None = None, **_: Any
) -> str:
    location = verify_location(setup, model)
    if location is None:  # a live model from the Python API: the report's own description
        spec = report.setup if ":" in report.setup and report.setup.split(":")[0].endswith(".py") else None
        location = verify_location(spec) if spec else None
        location = location or physical(report.setup.split(" ")[0] or ".")
    results = [
        Result(
            m.outcome,
            f"{m.path}: {m.detail} [intent: {m.intent}] ({report.optimizer}, "
            f"weight_decay={report.weight_decay}, {report.steps} steps)",
            location,
            m.path,
        )
        for m in report.measurements
        if not m.ok
    ]
    return sarif_log(results, [location], "verify")
