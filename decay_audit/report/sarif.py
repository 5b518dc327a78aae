"""``--format sarif``: SARIF 2.1.0 for code-scanning tools (GitHub, GitLab, VS Code).

One rule per finding type, in one table (:data:`RULES`). Every result names the file
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

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/decay-audit/"


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
    SarifRule("DA001", "dead-pattern", "An exclusion pattern matches no variable",
              "The rule's pattern selects nothing in the model, so whatever it was meant to exclude is decayed. "
              "Keras 3 matches the leaf on JAX/torch but 'path:0' on TensorFlow; tf_keras matches 'dense/bias:0'. "
              "Regenerate the rule with `decay-audit rules MODEL --target T`.", "error"),
    SarifRule("DA002", "over-broad-pattern", "A pattern also selects variables the policy treats the other way",
              "The pattern matches kernels or embeddings the policy decays (or, for an include pattern, "
              "variables it excludes). Anchor the pattern, or use `decay-audit rules` to emit one.", "error"),
    SarifRule("DA003", "decayed-against-policy", "A variable gets weight decay that the policy excludes",
              "A bias, normalization gain/offset, embedding or other excluded variable is decayed by the "
              "rule (check) or was measured to shrink in a training step (verify).", "error"),
    SarifRule("DA004", "excluded-against-policy", "A variable the policy decays is excluded by the rule",
              "The rule excludes a variable the policy intends to decay.", "error"),
    SarifRule("DA005", "double-decay", "Both decoupled and coupled decay reach one variable",
              "The optimizer's weight_decay and a penalty in the loss (kernel_regularizer, an L2 term) both "
              "shrink this variable: it is decayed twice. Keep one of them.", "error"),
    SarifRule("DA006", "never-switched-on", "A variable meant to decay received no decay in any probe step",
              "weight_decay is 0 or unset, the variable is excluded by mistake, or the training step bypasses the "
              "optimizer's decay (e.g. a wrapper that drops exclude_from_weight_decay).", "error"),
    SarifRule("DA007", "saved-optimizer-decays-all", "The saved optimizer decays every variable after load_model",
              "The file's compile config has weight_decay > 0; exclusions are not saved, so training resumed "
              "after keras.saving.load_model decays every variable, biases and norms included.", "error"),
    SarifRule("DA008", "low-confidence", "A variable's kind rests on shape or position alone",
              "decay-audit could not read the variable's role from a known layer class or a naming convention. "
              "Check the verdict, or pin it with --decay/--no-decay.", "warning"),
    SarifRule("DA009", "conflicting-evidence", "Evidence about a variable's kind disagrees",
              "Some evidence points to another kind than the verdict. Worth a human look.", "warning"),
    SarifRule("DA010", "policy-override", "A policy override matches nothing, or two overrides conflict",
              "A --decay/--no-decay selector or policy-file override selects no variable (a typo, or a model "
              "that changed), or a decay and a no-decay override both select a variable (no-decay wins).",
              "warning"),
    SarifRule("DA011", "rate-mismatch", "Decoupled decay is present, but not lr_t * weight_decay * w",
              "The measured shrink per step differs from the configured rate: a schedule, a wrapper or a "
              "second optimizer changes it.", "error"),
    SarifRule("DA012", "verify-mismatch", "The measured decay differs from the intent",
              "A verify verdict other than the ones above.", "error"),
)
"""Every finding type decay-audit reports, in one place; ids never change meaning."""

_BY_NAME = {rule.name: rule for rule in RULES}
_INDEX = {rule.id: index for index, rule in enumerate(RULES)}

CHECK_RULES = {
    "dead-pattern": "dead-pattern", "over-broad": "over-broad-pattern",
    "decayed-against-policy": "decayed-against-policy", "excluded-against-policy": "excluded-against-policy",
    "saved-optimizer-decays-all": "saved-optimizer-decays-all", "policy": "policy-override",
    "low-confidence": "low-confidence", "conflicting-evidence": "conflicting-evidence",
}
"""check's ``FindingKind`` values → rule names."""

VERIFY_RULES = {
    "double-decay": "double-decay", "not-decayed": "never-switched-on",
    "decayed-against-intent": "decayed-against-policy", "rate-mismatch": "rate-mismatch",
}
"""verify's ``Outcome`` values → rule names; any other failing outcome is ``verify-mismatch``."""


def rule_for(name: str) -> SarifRule:
    return _BY_NAME[name]


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

    rule: str
    """A rule name from :data:`RULES`."""
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
        location["logicalLocations"] = [{"name": result.subject, "fullyQualifiedName": result.subject,
                                         "kind": result.subject_kind}]
    fingerprint = hashlib.sha256("\0".join(
        (rule.id, result.location["artifactLocation"]["uri"], result.subject or "")).encode()).hexdigest()
    document = {
        "ruleId": rule.id, "ruleIndex": _INDEX[rule.id], "level": rule.level,
        "message": {"text": result.message}, "locations": [location],
        "partialFingerprints": {"decayAudit/v1": fingerprint},
    }
    if result.related:
        document["relatedLocations"] = [{"id": index + 1, "physicalLocation": related}
                                        for index, related in enumerate(result.related)]
    return document


def sarif_log(results: Iterable[Result], analysed: Sequence[dict] = (), command: str = "") -> str:
    """The SARIF document: one run, every rule listed, one result per finding."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        tool_version = version("decay-audit")
    except PackageNotFoundError:  # running from a checkout without an install
        tool_version = "0.0.0"
    rules = [{
        "id": rule.id, "name": rule.name, "shortDescription": {"text": rule.short},
        "fullDescription": {"text": rule.help}, "help": {"text": rule.help},
        "defaultConfiguration": {"level": rule.level},
    } for rule in RULES]
    run: dict[str, Any] = {
        "tool": {"driver": {"name": "decay-audit", "version": tool_version, "semanticVersion": tool_version,
                            "informationUri": INFORMATION_URI, "rules": rules}},
        "results": [_result(r) for r in results],
        "columnKind": "unicodeCodePoints",
        "originalUriBaseIds": {"%SRCROOT%": {"uri": Path.cwd().resolve().as_uri() + "/"}},
    }
    if analysed:
        run["artifacts"] = [{"location": location["artifactLocation"], "roles": ["analysisTarget"]}
                            for location in analysed]
    if command:
        run["automationDetails"] = {"id": f"decay-audit/{command}/"}
    log = {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}
    return json.dumps(log, indent=2, ensure_ascii=True) + "\n"


# --- scan --------------------------------------------------------------------------------

def scan_results(report: Any) -> list[Result]:
    """The problems ``scan --strict`` fails on, plus a saved optimizer that decays everything."""
    from decay_audit.rulecheck import scan_findings

    location = physical(report.source)
    return [Result(CHECK_RULES[f.kind.value], f"{f.subject}: {f.detail}", location, f.subject,
                   "variable" if f.kind.value in ("low-confidence", "conflicting-evidence") else "value")
            for f in scan_findings(report)]


def scan_sarif(report: Any, **_: Any) -> str:
    return sarif_log(scan_results(report), [physical(report.source)], "scan")


def batch_sarif(batch: Any, **_: Any) -> str:
    """Several models in one run: each result located in its own model file."""
    results, analysed = [], []
    for item in batch.items:
        analysed.append(physical(item.path))
        if item.report is not None:
            results += scan_results(item.report)
    return sarif_log(results, analysed, "scan")


# --- check -------------------------------------------------------------------------------

_PATTERN_KINDS = frozenset({"dead-pattern", "over-broad"})


def check_sarif(result: Any, model: str | os.PathLike | None = None, rules: str | os.PathLike | None = None,
                **_: Any) -> str:
    """Pattern findings sit in the rule file when there is one (that is what a reviewer edits),
    with the model as a related location; variable findings sit in the model file."""
    model_location = physical(model if model is not None else result.source)
    rules_location = physical(rules) if rules is not None else None
    results = []
    for finding in result.findings:
        kind = finding.kind.value
        on_rule_file = rules_location is not None and kind in _PATTERN_KINDS
        results.append(Result(
            CHECK_RULES.get(kind, "policy-override"),
            f"{finding.subject}: {finding.detail} ({result.target} rule)",
            rules_location if on_rule_file else model_location,
            finding.subject,
            "value" if kind in _PATTERN_KINDS or kind == "policy" else "variable",
            (model_location,) if on_rule_file else (),
        ))
    analysed = [model_location] + ([rules_location] if rules_location else [])
    return sarif_log(results, analysed, "check")


# --- verify ------------------------------------------------------------------------------

def verify_location(setup: str | None = None, model: str | os.PathLike | None = None) -> dict | None:
    """The set-up file at the line of its function (``train.py:make``), or the model file."""
    if setup:
        path, _, function = str(setup).rpartition(":")
        return physical(path, function_line(path, function))
    if model is not None:
        return physical(model)
    return None


def verify_sarif(report: Any, setup: str | None = None, model: str | os.PathLike | None = None, **_: Any) -> str:
    location = verify_location(setup, model)
    if location is None:  # a live model from the Python API: the report's own description
        spec = report.setup if ":" in report.setup and report.setup.split(":")[0].endswith(".py") else None
        location = verify_location(spec) if spec else physical(report.setup.split(" ")[0] or ".")
    results = [Result(VERIFY_RULES.get(m.outcome.value, "verify-mismatch"),
                      f"{m.path}: {m.detail} [intent: {m.intent}] ({report.optimizer}, "
                      f"weight_decay={report.weight_decay}, {report.steps} steps)",
                      location, m.path)
               for m in report.measurements if not m.ok]
    return sarif_log(results, [location], "verify")
