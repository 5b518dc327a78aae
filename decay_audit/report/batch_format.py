"""Rendering of a multi-model scan: one summary row per model plus totals, or one JSON report per model."""

from __future__ import annotations

import json

from decay_audit.report.sanitize import safe_text
from decay_audit.results import BatchReport, ModelCounts

HEADERS = ("model", "loader", "variables", "decayed", "excluded", "low conf", "findings", "status")


def batch_rows(batch: BatchReport) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for item in batch.items:
        if item.report is None:
            rows.append((safe_text(item.path), "-", "", "", "", "", "", f"error: {safe_text(item.error)}"))
            continue
        c = ModelCounts.of(item.report)
        rows.append(
            (
                safe_text(item.path),
                item.report.loader,
                c.variables,
                c.decayed,
                c.excluded,
                c.low_confidence,
                c.findings,
                "ok" if not c.strict_problems else "check",
            )
        )
    return rows


def format_batch_table(batch: BatchReport) -> str:
    from tabulate import tabulate

    totals = batch.totals()
    rows = batch_rows(batch)
    rows.append(
        (
            f"total ({totals.models} models)",
            "",
            totals.variables,
            totals.decayed,
            totals.excluded,
            totals.low_confidence,
            totals.findings,
            f"{totals.unreadable} unreadable" if totals.unreadable else "",
        )
    )
    table = tabulate(
        rows,
        headers=HEADERS,
        tablefmt="simple",
        disable_numparse=True,
        colalign=("left", "left", "right", "right", "right", "right", "right", "left"),
    )
    lines = [table, ""]
    lines.append(
        "status 'check': low-confidence or conflicting verdicts or a dead override "
        "(scan MODEL shows which; --strict exits 1)"
        if totals.strict_problems
        else "no low-confidence or conflicting verdicts, no dead overrides"
    )
    return "\n".join(lines) + "\n"


def format_batch_json(batch: BatchReport) -> str:
    """``{"models": [scan report, ...], "errors": [...], "totals": {...}}``: each entry of
    ``models`` follows ``schemas/scan.schema.json``, exactly as ``scan MODEL --format json``."""
    from dataclasses import asdict

    from decay_audit.report.json_format import report_dict

    document = {
        "models": [report_dict(report) for report in batch.reports],
        "errors": [{"path": item.path, "error": item.error} for item in batch.errors],
        "totals": asdict(batch.totals()),
    }
    return json.dumps(document, ensure_ascii=True, indent=1) + "\n"
