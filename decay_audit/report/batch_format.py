"""Rendering of a multi-model scan: one summary row per model plus totals, or one JSON report per model."""

from __future__ import annotations

from typing import Any

from decay_audit.report import terminal
from decay_audit.report.sanitize import safe_text
from decay_audit.report.terminal import Column, Fit, Show, View
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


def _totals_row(batch: BatchReport) -> tuple[object, ...]:
    totals = batch.totals()
    return (
        f"total ({totals.models} models)",
        "",
        totals.variables,
        totals.decayed,
        totals.excluded,
        totals.low_confidence,
        totals.findings,
        f"{totals.unreadable} unreadable" if totals.unreadable else "",
    )


def _closing(batch: BatchReport) -> str:
    return (
        "status 'check': low-confidence or conflicting verdicts or a dead override "
        "(scan MODEL shows which; --strict exits 1)"
        if batch.totals().strict_problems
        else "no low-confidence or conflicting verdicts, no dead overrides"
    )


def _flagged(batch: BatchReport) -> list[tuple[str, str, str, str]]:
    """(model, finding, subject, detail): every finding of every model, and each model that could not be read."""
    rows = []
    for item in batch.items:
        if item.report is None:
            rows.append((safe_text(item.path), "error", "-", safe_text(item.error)))
            continue
        for finding in item.report.findings():
            rows.append(
                (safe_text(item.path), finding.kind.value, safe_text(finding.subject), safe_text(finding.detail))
            )
    return rows


_FINDINGS_HEADERS = ("model", "finding", "subject", "detail")


def format_batch_table(
    batch: BatchReport, show: Show | str = Show.ALL, width: int | None = None, color: bool = False
) -> str:
    """One row per model. ``show=findings`` lists the findings of every model instead (what ``scan MODEL``
    would show for each), then the totals."""
    view = View(Show(show), width, color)
    from tabulate import tabulate

    if not view.plain:
        return _on_terminal(batch, view)
    if view.findings_only:
        flagged = _flagged(batch)
        lines = [tabulate(flagged, headers=_FINDINGS_HEADERS, tablefmt="simple") if flagged else "no findings", ""]
        rows = [_totals_row(batch)]
    else:
        lines, rows = [], batch_rows(batch) + [_totals_row(batch)]
    table = tabulate(
        rows,
        headers=HEADERS,
        tablefmt="simple",
        disable_numparse=True,
        colalign=("left", "left", "right", "right", "right", "right", "right", "left"),
    )
    lines += [table, ""]
    lines.append(_closing(batch))
    return "\n".join(lines) + "\n"


_COLUMNS = (
    Column("model", Fit.WRAP, min_width=24),
    Column("loader", drop=1),
    *(Column(header, right=True) for header in HEADERS[2:7]),
    Column("status", style=terminal.status_style),
)
_FINDINGS_COLUMNS = (
    Column("finding", style=terminal.finding_style),
    Column("subject", Fit.WRAP, min_width=16),
    Column("detail", Fit.WRAP, min_width=24),
)


def _common_directory(batch: BatchReport) -> str:
    """The directory every model lies under, said once so that each row names only what differs."""
    import os

    if len(batch.items) < 2:
        return ""
    try:
        common = os.path.commonpath([os.path.dirname(item.path) or "." for item in batch.items])
    except ValueError:  # absolute and relative paths mixed
        return ""
    return "" if common in ("", ".") else common


def _on_terminal(batch: BatchReport, view: View) -> str:
    """The findings of every model first, model by model; then one row per model (with ``show=findings``
    only the totals). Paths are shown below the directory they share; an error's text is a finding."""
    import os

    common = _common_directory(batch)

    def name(path: str) -> str:
        return safe_text(os.path.relpath(path, common) if common else path)

    blocks: list[Any] = [
        terminal.text(f"{len(batch.items)} models" + (f" under {safe_text(common)}" if common else ""))
    ]
    blocks.append("")
    flagged: dict[str, list[tuple[str, str, str]]] = {}
    for model, kind, subject, detail in _flagged(batch):
        flagged.setdefault(model, []).append((kind, subject, detail))
    for item in batch.items:
        found = flagged.get(safe_text(item.path))
        if found:
            blocks.append(terminal.text(f"{name(item.path)}: {len(found)} finding(s)", "bold" if view.color else None))
            blocks += [terminal.grid(view, _FINDINGS_COLUMNS, found).table, ""]
    if not flagged and view.findings_only:
        blocks += [terminal.text("no findings", terminal.GOOD), ""]
    rows = (
        [] if view.findings_only else [(name(item.path), *row[1:]) for item, row in zip(batch.items, batch_rows(batch))]
    )
    rows = [row[:7] + ("error",) if str(row[7]).startswith("error") else row for row in rows] + [_totals_row(batch)]
    models = terminal.grid(view, _COLUMNS, [tuple(str(cell) for cell in row) for row in rows])
    blocks += [models.table, *terminal.left_out(models.dropped, view.width), ""]
    blocks.append(terminal.text(_closing(batch), terminal.WARNING if batch.totals().strict_problems else None))
    return terminal.paint(view, blocks)


def format_batch_json(batch: BatchReport) -> str:
    """The envelope of ``schemas/scan-many.schema.json``; its ``result`` is ``{"models": [...], "errors":
    [...], "totals": {...}}``, each entry of ``models`` exactly the ``result`` of ``scan MODEL --format json``."""
    from dataclasses import asdict

    from decay_audit.report.json_format import dumps, envelope, report_dict

    result = {
        "models": [report_dict(report) for report in batch.reports],
        "errors": [{"path": item.path, "error": item.error} for item in batch.errors],
        "totals": asdict(batch.totals()),
    }
    return dumps(envelope("scan-many", result))
