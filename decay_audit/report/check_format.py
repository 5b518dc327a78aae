"""Rendering of ``decay-audit check`` results (table or JSON)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from tabulate import tabulate

from decay_audit.report import terminal
from decay_audit.report.sanitize import safe_text
from decay_audit.report.terminal import Column, Fit, Show, View
from decay_audit.results import CheckReport

NO_FINDINGS = "no findings: the rule selects exactly what the policy intends"


def check_dict(result: CheckReport) -> dict[str, Any]:
    """The ``result`` of ``check --format json``."""
    from decay_audit.report.json_format import finding_dict

    document = asdict(result)
    document["findings"] = [finding_dict(f) for f in result.findings]
    return document


def _pattern_rows(result: CheckReport) -> list[tuple[object, ...]]:
    return [
        (
            safe_text(p.pattern),
            "decay" if p.decays else "exclude",
            len(p.paths),
            safe_text(", ".join(p.paths[:3]) + (" ..." if len(p.paths) > 3 else "")),
        )
        for p in result.patterns
    ]


def _finding_rows(result: CheckReport) -> list[tuple[str, str, str]]:
    return [(f.kind.value, safe_text(f.subject), safe_text(f.detail)) for f in result.findings]


def format_check(result: CheckReport, output_format: str, view: View = terminal.PLAIN) -> str:
    if output_format == "json":
        return format_check_json(result)
    if not view.plain:
        return _on_terminal(result, view)
    lines = [f"{safe_text(result.source)}: {result.target} rule"]
    rows = _pattern_rows(result)
    if rows and not view.findings_only:
        lines += ["", tabulate(rows, headers=("pattern", "effect", "matches", "variables"), tablefmt="simple")]
    lines.append("")
    if not result.findings:
        lines.append(NO_FINDINGS)
    else:
        lines.append(tabulate(_finding_rows(result), headers=("finding", "subject", "detail"), tablefmt="simple"))
        lines.append("")
        lines.append(f"{len(result.findings)} finding(s)")
    return "\n".join(lines) + "\n"


_PATTERN_COLUMNS = (
    Column("pattern", Fit.WRAP, min_width=16),
    Column("effect"),
    Column("matches", right=True),
    Column("variables", Fit.CUT, min_width=16, drop=1),
)
_FINDING_COLUMNS = (
    Column("finding", style=terminal.finding_style),
    Column("subject", Fit.WRAP, min_width=16),
    Column("detail", Fit.WRAP, min_width=24),
)


def _on_terminal(result: CheckReport, view: View) -> str:
    """The findings first, each whole; then what each pattern matches (left out with ``show=findings``)."""
    blocks: list[Any] = [
        terminal.text(f"{safe_text(result.source)}: {result.target} rule", "bold" if view.color else None)
    ]
    blocks.append("")
    if result.findings:
        blocks.append(terminal.text(f"{len(result.findings)} finding(s)", terminal.PROBLEM))
        blocks.append(terminal.grid(view, _FINDING_COLUMNS, _finding_rows(result)).table)
    else:
        blocks.append(terminal.text(NO_FINDINGS, terminal.GOOD))
    rows = _pattern_rows(result)
    if rows and not view.findings_only:
        patterns = terminal.grid(view, _PATTERN_COLUMNS, [tuple(str(cell) for cell in row) for row in rows])
        blocks += ["", patterns.table, *terminal.left_out(patterns.dropped, view.width)]
    return terminal.paint(view, blocks)


def format_check_table(
    result: CheckReport, show: Show | str = Show.ALL, width: int | None = None, color: bool = False
) -> str:
    view = View(Show(show), width, color)
    return format_check(result, "table", view)


def format_check_json(result: CheckReport) -> str:
    from decay_audit.report.json_format import dumps, envelope

    return dumps(envelope("check", check_dict(result)))
