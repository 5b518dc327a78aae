"""``--format json``: one envelope for every command, validated by ``schemas/<command>.schema.json``.

Every command prints ``{"schema_version": 1, "tool": {"name": "decay-audit", "version": ...},
"command": ..., "result": {...}}``, so a program reads one shape first and the command's record
under ``result``; the per-variable list is ``variables`` in every command that has one.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from decay_audit.findings import Finding
from decay_audit.results import ScanReport

SCHEMA_VERSION = 1
"""Raised when a field is renamed, removed or changes meaning; adding a field keeps it."""
TOOL = "decay-audit"


def envelope(command: str, result: dict[str, Any]) -> dict[str, Any]:
    """The one outer shape of every command's JSON."""
    from decay_audit import __version__

    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": TOOL, "version": __version__},
        "command": command,
        "result": result,
    }


def finding_dict(finding: Finding) -> dict[str, str]:
    return {"kind": finding.kind.value, "subject": finding.subject, "detail": finding.detail}


def report_dict(report: ScanReport) -> dict:
    """The ``result`` of ``scan MODEL --format json`` (and one entry of a multi-model scan's ``models``)."""
    summary = report.summary()
    summary_dict = asdict(summary)
    summary_dict["per_kind"] = [
        {"kind": k.kind.value, "variables": k.variables, "parameters": k.parameters, "decayed": k.decayed}
        for k in summary.per_kind
    ]
    optimizer = report.inventory.optimizer
    return {
        "source": report.source,
        "loader": report.loader,
        "model_name": report.inventory.model_name,
        "preset": report.preset.value,
        "notes": list(report.notes),
        "saved_optimizer": None
        if optimizer is None
        else {
            "class_name": optimizer.class_name,
            "weight_decay": optimizer.weight_decay,
        },
        "variables": [v.row() for v in report.variables],
        "findings": [finding_dict(f) for f in report.findings()],
        "summary": summary_dict,
    }


_CONTAINERS = (dict, list, tuple)
_SCALARS = frozenset({str, int, float, bool, type(None)})
"""Types that are no container, checked by one set look-up before the ``isinstance`` calls."""


def _flat(value: Any) -> bool:
    """A record whose fields are all scalars or lists of scalars: printed on one line.
    Loops, not ``all()`` over generators: it runs on every variable's record (6,000: 16 ms, now 8)."""
    if not isinstance(value, dict):
        return False
    for field in value.values():
        if type(field) in _SCALARS:
            continue
        if isinstance(field, dict) or (isinstance(field, _CONTAINERS) and not _flat_list(field)):
            return False
    return True


def _flat_list(value: Any) -> bool:
    if not isinstance(value, (list, tuple)):
        return False
    for item in value:
        if isinstance(item, _CONTAINERS):
            return False
    return True


def dumps(document: Any, indent: int = 0) -> str:
    """JSON with one record per line: ``variables`` read well in a diff, and each record goes
    through json's C encoder (an indented dump of ConvNeXtTiny's report took 15 ms in the
    pure-Python encoder). ensure_ascii keeps every control character and escape sequence out of
    the terminal."""
    return _dump(document, indent) + "\n"


def _dump(value: Any, indent: int) -> str:
    inner = " " * (indent + 2)
    if isinstance(value, dict) and value and not (indent and _flat(value)):
        items = [f"{inner}{json.dumps(key)}: {_dump(item, indent + 2)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(value, (list, tuple)) and value and not _flat_list(value):
        lines = _records_on_lines(value, inner)
        if lines is None:
            lines = ",\n".join([inner + _dump(item, indent + 2) for item in value])
        return "[\n" + lines + "\n" + " " * indent + "]"
    return json.dumps(value, ensure_ascii=True)


_BETWEEN_RECORDS = '}, {"'
"""What ``json.dumps`` writes between two non-empty records of a list. Never inside a string: a
quote there is written ``\\"``. Between flat records' fields neither, as they hold no record."""


def _records_on_lines(value: list | tuple, inner: str) -> str | None:
    """A list of non-empty flat records, one per line, from one ``json.dumps`` of the whole list:
    the same text as one ``json.dumps`` per record, whose set-up cost per call was a third of
    a 6,000-variable report's rendering. None for any other list."""
    for item in value:
        if not (type(item) is dict and item and _flat(item)):
            return None
    text = json.dumps(value, ensure_ascii=True)[1:-1]
    if text.count(_BETWEEN_RECORDS) != len(value) - 1:
        return None
    return inner + text.replace(_BETWEEN_RECORDS, "},\n" + inner + '{"')


def format_json(report: ScanReport) -> str:
    return dumps(envelope("scan", report_dict(report)))
