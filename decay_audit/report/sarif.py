"""``--format sarif``: SARIF 2.1.0 for code-scanning tools (GitHub, GitLab, VS Code).

One rule per finding type, from the one table in :mod:`decay_audit.findings`. Every result names the file
it is about as a physical location and, where a variable or pattern is the subject, that
name as a logical location (kind ``variable`` for a weight's path, ``value`` for a pattern). The
output validates against the OASIS SARIF 2.1.0 schema shipped in
``decay_audit/schemas/sarif-schema-2.1.0.json`` (tests/test_sarif.py).

Locations are where a reviewer would edit:

- ``check --rules FILE``: a dead or over-broad pattern sits at the line and column where that
  pattern is written in the rule file, JSON or YAML (:func:`decay_audit.files.read_located`),
  with the model as a related location;
- ``verify --setup train.py:make``: the line of the set-up's ``exclude_from_weight_decay`` call,
  else of its optimizer's construction, looked for with ``ast`` in ``make`` and then in the
  functions of the same file that ``make`` calls (one level down), else the ``def`` line;
- a model file is a whole-file location, with no ``region``. A model is binary: it has no lines,
  and "line 1" of it is nothing a reviewer can look at. What GitHub accepts, researched: the
  OASIS schema makes ``region`` optional, an absent one meaning the whole artifact; GitHub's own
  uploader (github/codeql-action ``src/fingerprints.ts``) handles a missing region as an alert
  "that pertains to the entire file" and, for a location without a line, never reads the file to
  hash its lines. GitHub's reference page ("SARIF support for code scanning") and Microsoft's
  GitHub-ingestion validator rule GH1003 ask for ``region.startLine`` so that an alert can be
  annotated on a line of a text file, which a model file cannot offer. The uploader computes no
  ``primaryLocationLineHash`` (the one fingerprint GitHub matches alerts across runs by) for
  such a location, so results located in a model file carry one computed here from the rule,
  the file and the subject.

URIs are relative to ``%SRCROOT%``, which ``originalUriBaseIds`` points at: the root of the git
work tree that holds the command's main file (the rule file, the set-up, else the model) --
what code scanning resolves relative URIs against -- else the current directory. A file under
neither is an absolute ``file://`` URI.
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

from decay_audit.errors import DecayAuditError
from decay_audit.files import Pointer, Span, read_located
from decay_audit.findings import RULE_INDEX, RULES, FindingKind, Outcome, rule_for
from decay_audit.results import BatchReport, CheckReport, PatternReport, ScanReport, VerifyReport

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
INFORMATION_URI = "https://pypi.org/project/decay-audit/"
SRCROOT = "%SRCROOT%"


# --- locations ---------------------------------------------------------------------------


def source_root(path: str | os.PathLike[str] | None = None) -> Path:
    """The directory relative URIs are relative to: the git work tree that holds ``path`` (the
    nearest directory above it with a ``.git``), else the current directory."""
    if path is not None:
        resolved = Path(path).resolve()
        for directory in (resolved, *resolved.parents):
            if (directory / ".git").exists():
                return directory
    return Path.cwd().resolve()


def _uri(path: str | os.PathLike[str], root: Path) -> tuple[str, str | None]:
    """A path under ``root`` as a relative URI against %SRCROOT%, anything else as an absolute file URI."""
    resolved = Path(path).resolve()
    try:
        relative = resolved.relative_to(root)
    except ValueError:
        return resolved.as_uri(), None
    from urllib.parse import quote

    return quote(relative.as_posix()), SRCROOT


def physical(
    path: str | os.PathLike[str], line: int | None = None, *, span: Span | None = None, root: Path | None = None
) -> dict:
    """A SARIF physicalLocation: the file, and a region when there is a line (or a span) to point
    at; without one, the whole file (how a binary model file is located)."""
    uri, base = _uri(path, root if root is not None else source_root(path))
    location: dict[str, Any] = {"artifactLocation": {"uri": uri, **({"uriBaseId": base} if base else {})}}
    if span is not None:
        location["region"] = {
            "startLine": span.line,
            "startColumn": span.column,
            "endLine": span.end_line,
            "endColumn": span.end_column,
        }
    elif line is not None:
        location["region"] = {"startLine": max(1, int(line))}
    return location


def _module(path: str | os.PathLike[str]) -> ast.Module | None:
    try:
        return ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None


def function_line(path: str | os.PathLike[str], function: str) -> int:
    """The line of ``def function`` in a Python file, read with ``ast`` (the file is not imported
    again); 1 when it is not found at module level."""
    tree = _module(path)
    for node in tree.body if tree is not None else ():
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == function:
            return node.lineno
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == function for t in node.targets):
            return node.lineno
    return 1


_OPTIMIZER_CLASSES = frozenset(
    {
        "Adadelta",
        "Adafactor",
        "Adagrad",
        "Adam",
        "AdamW",
        "AdamWeightDecay",
        "Adamax",
        "Ftrl",
        "Lamb",
        "Lion",
        "LossScaleOptimizer",
        "Nadam",
        "RMSprop",
        "SGD",
    }
)
"""Optimizer classes called by their bare name (``from keras.optimizers import AdamW``; Model
Garden's ``AdamWeightDecay``)."""

_OPTAX_DECAY = frozenset({"adamw", "add_decayed_weights"})
"""optax calls that configure decay."""


def _dotted(node: ast.expr) -> list[str]:
    """``keras.optimizers.AdamW`` → ``["keras", "optimizers", "AdamW"]``; [] for anything else."""
    names: list[str] = []
    while isinstance(node, ast.Attribute):
        names.insert(0, node.attr)
        node = node.value
    return [node.id, *names] if isinstance(node, ast.Name) else []


def _calls(scope: ast.AST) -> list[ast.Call]:
    """Every call inside ``scope``, in source order."""
    return sorted(
        (node for node in ast.walk(scope) if isinstance(node, ast.Call)), key=lambda c: (c.lineno, c.col_offset)
    )


def _excludes(call: ast.Call) -> bool:
    return _dotted(call.func)[-1:] == ["exclude_from_weight_decay"]


def _constructs_optimizer(call: ast.Call) -> bool:
    names = _dotted(call.func)
    if not names or "schedules" in names:
        return False
    return (
        names[-1] in _OPTIMIZER_CLASSES
        or "optimizers" in names[:-1]
        or (names[0] == "optax" and names[-1] in _OPTAX_DECAY)
    )


def setup_line(path: str | os.PathLike[str], function: str) -> int:
    """The line a ``verify`` finding about the set-up ``path:function`` belongs on: its
    ``exclude_from_weight_decay`` call, else its optimizer's construction (``keras.optimizers.X(...)``,
    ``AdamW(...)``), found in ``function`` itself first, then in the functions of the same file it
    calls (one level down), else the ``def`` line. Read with ``ast``; the file is not imported again."""
    tree = _module(path)
    if tree is None:
        return 1
    defined = {node.name: node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    made = defined.get(function)
    if made is None:
        return function_line(path, function)
    called = [
        defined[name]
        for name in dict.fromkeys(n[0] for n in (_dotted(c.func) for c in _calls(made)) if len(n) == 1)
        if name in defined and name != function
    ]
    for wanted in (_excludes, _constructs_optimizer):
        for scope in (made, *called):
            for call in _calls(scope):
                if wanted(call):
                    return call.lineno
    return made.lineno


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
    properties: dict | None = None
    """SARIF ``properties`` of the result: the measured figures behind a verify verdict."""


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
    fingerprints = {"decayAudit/v1": fingerprint}
    if "region" not in result.location:  # no lines for the uploader to hash: give GitHub its one key
        fingerprints["primaryLocationLineHash"] = f"{fingerprint[:16]}:1"
    document = {
        "ruleId": rule.id,
        "ruleIndex": RULE_INDEX[rule.id],
        "level": rule.level,
        "message": {"text": result.message},
        "locations": [location],
        "partialFingerprints": fingerprints,
    }
    if result.properties:
        document["properties"] = result.properties
    if result.related:
        document["relatedLocations"] = [
            {"id": index + 1, "physicalLocation": related} for index, related in enumerate(result.related)
        ]
    return document


def sarif_log(
    results: Iterable[Result], analysed: Sequence[dict] = (), command: str = "", root: Path | None = None
) -> str:
    """The SARIF document: one run, every rule listed, one result per finding; ``root`` is the
    %SRCROOT% the locations were made against (default: the current directory)."""
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
        "originalUriBaseIds": {SRCROOT: {"uri": (root or Path.cwd().resolve()).as_uri().rstrip("/") + "/"}},
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


def scan_results(report: ScanReport, root: Path | None = None) -> list[Result]:
    """The problems ``scan --strict`` fails on, plus a saved optimizer that decays everything."""
    location = physical(report.source, root=root)
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
    root = source_root(report.source)
    return sarif_log(scan_results(report, root), [physical(report.source, root=root)], "scan", root)


def batch_sarif(batch: BatchReport, **_: Any) -> str:
    """Several models in one run: each result located in its own model file."""
    root = source_root(batch.items[0].path if batch.items else None)
    results, analysed = [], []
    for item in batch.items:
        analysed.append(physical(item.path, root=root))
        if item.report is not None:
            results += scan_results(item.report, root)
    return sarif_log(results, analysed, "scan", root)


# --- check -------------------------------------------------------------------------------

_PATTERN_KINDS = frozenset({FindingKind.DEAD_PATTERN, FindingKind.OVER_BROAD})


def _label(key: str, value: Any) -> str | None:
    """What ``check`` calls the pattern a rule-file entry stands for: the entry itself for a
    regex list, and for the keras target's ``var_list`` entries the labels rules/keras3.py gives
    them (``path P``, ``layer L``, ``layer L variable I``)."""
    if key == "exclude_paths":
        return f"path {value}"
    if key == "exclude_layers":
        return f"layer {value}"
    if key == "exclude_positions":
        return f"layer {value.get('layer')} variable {value.get('index')}" if isinstance(value, dict) else None
    return value if isinstance(value, str) else None


def _pattern_pointers(document: Any, pattern: PatternReport) -> list[Pointer]:
    """Where ``pattern`` is written in a rule document, in document order: inclusion patterns
    live in ``include_*`` lists (Model Garden), the optax mask's ``mask=True`` is the mask."""
    if not isinstance(document, dict):
        return []
    if pattern.pattern == "mask=True" and "mask" in document:
        return [("mask",)]
    found: list[Pointer] = []
    for key, values in document.items():
        if isinstance(key, str) and isinstance(values, list) and key.startswith("include") == pattern.decays:
            found += [(key, index) for index, value in enumerate(values) if _label(key, value) == pattern.pattern]
    return found


def _pattern_spans(result: CheckReport, rules: str | os.PathLike[str]) -> dict[int, Span]:
    """For each pattern of ``result`` (by its index), where it is written in the rule file. The
    n-th pattern with the same text is the n-th place that text is written."""
    try:
        located = read_located(Path(rules))
    except DecayAuditError:  # changed or gone since check read it: the findings still stand
        return {}
    seen: dict[tuple[str, bool], int] = {}
    spans: dict[int, Span] = {}
    for index, pattern in enumerate(result.patterns):
        occurrence = seen.get((pattern.pattern, pattern.decays), 0)
        seen[(pattern.pattern, pattern.decays)] = occurrence + 1
        pointers = _pattern_pointers(located.document, pattern)
        if occurrence < len(pointers) and pointers[occurrence] in located.spans:
            spans[index] = located.spans[pointers[occurrence]]
    return spans


def check_sarif(
    result: CheckReport, model: str | os.PathLike | None = None, rules: str | os.PathLike | None = None, **_: Any
) -> str:
    """Pattern findings sit in the rule file, on the pattern, when there is one (that is what a
    reviewer edits), with the model as a related location; variable findings sit in the model file."""
    root = source_root(rules if rules is not None else model if model is not None else result.source)
    model_location = physical(model if model is not None else result.source, root=root)
    rules_location = physical(rules, root=root) if rules is not None else None
    located = rules is not None and any(f.kind in _PATTERN_KINDS for f in result.findings)
    spans = _pattern_spans(result, rules) if rules is not None and located else {}
    cursor = 0  # pattern findings come in the order of result.patterns, at most one per pattern
    results = []
    for finding in result.findings:
        kind = finding.kind
        location = model_location
        if rules is not None and kind in _PATTERN_KINDS:
            while cursor < len(result.patterns) and result.patterns[cursor].pattern != finding.subject:
                cursor += 1
            span = spans.get(cursor)
            location = physical(rules, span=span, root=root) if span is not None else rules_location or location
            cursor += 1
        results.append(
            Result(
                kind,
                f"{finding.subject}: {finding.detail} ({result.target} rule)",
                location,
                finding.subject,
                "value" if kind in _PATTERN_KINDS or kind is FindingKind.POLICY else "variable",
                (model_location,) if location is not model_location else (),
            )
        )
    analysed = [model_location] + ([rules_location] if rules_location else [])
    return sarif_log(results, analysed, "check", root)


# --- verify ------------------------------------------------------------------------------


def _setup_file(setup: str | None, python_only: bool = False) -> tuple[str, str] | None:
    """``train.py:make`` → (``train.py``, ``make``); None when there is no ``FILE:FUNCTION``
    (with ``python_only``, no ``FILE.py:FUNCTION``: a report's description of a live model)."""
    path, _, function = str(setup or "").rpartition(":")
    if not path or not function or (python_only and not path.endswith(".py")):
        return None
    return path, function


def verify_location(
    setup: str | None = None, model: str | os.PathLike[str] | None = None, root: Path | None = None
) -> dict[str, Any] | None:
    """The set-up file at the line that configures decay (:func:`setup_line`), or the model file."""
    spec = _setup_file(setup)
    if spec is not None:
        return physical(spec[0], setup_line(*spec), root=root)
    if model is not None:
        return physical(model, root=root)
    return None


def verify_sarif(
    report: VerifyReport, setup: str | None = None, model: str | os.PathLike | None = None, **_: Any
) -> str:
    described = report.setup.split(" ")[0]
    spec = _setup_file(setup) or _setup_file(described, python_only=True)
    root = source_root(spec[0] if spec else model)
    location = verify_location(setup, model, root)
    if location is None:  # a live model from the Python API: the report's own description
        location = verify_location(described, root=root) if _setup_file(described, python_only=True) else None
        location = location or physical(described or ".", root=root)
    results = [
        Result(
            m.outcome,
            f"{m.path}: {m.detail} [intent: {m.intent}] ({report.optimizer}, "
            f"weight_decay={report.weight_decay}, {report.steps} steps)",
            location,
            m.path,
            properties={
                "measured": m.measured,
                "decoupledRatio": m.decoupled_ratio,
                "decoupledSteps": m.decoupled_steps,
                "coupledSteps": m.coupled_steps,
                "l1": m.l1,
                "l1Steps": m.l1_steps,
                "emaOverwriteSteps": m.ema_overwrite_steps,
                "steps": m.steps,
                "updatedSteps": report.updated_steps,
            },
        )
        for m in report.measurements
        if not m.ok
    ]
    return sarif_log(results, [location], "verify", root)
