"""``--format table`` and ``--format markdown``: grouped by layer, then the summary.

Both are one renderer with a different tabulate style, so they never drift apart (tabulate's
``simple`` style is drawn here, byte for byte, where the cells allow: see ``_simple_table``). On a
terminal (a width or colour given) the table is drawn by :mod:`decay_audit.report.terminal`
instead: the variables with findings first, then every variable, one line each, fitted to the width.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from decay_audit.findings import FindingKind
from decay_audit.report import terminal
from decay_audit.report.sanitize import safe_text
from decay_audit.report.terminal import Column, Fit, Show, View
from decay_audit.results import ScannedVariable, ScanReport

_HEADERS = ("layer", "variable", "shape", "kind", "decay", "conf", "evidence")


def _shape(variable: ScannedVariable) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in variable.record.shape) + ")"


def _rows(report: ScanReport, cell: Callable[[object], str]) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    groups: dict[tuple[str | None, str | None], list[ScannedVariable]] = {}
    for variable in report.variables:
        groups.setdefault((variable.record.layer, variable.record.layer_class), []).append(variable)
    for (layer, layer_class), members in groups.items():
        label = cell(layer or "-") + (f" ({cell(layer_class)})" if layer_class else "")
        for index, variable in enumerate(members):
            classification = variable.classification
            evidence = classification.evidence[0] if classification.evidence else ""
            if classification.conflicts:
                evidence += f" [conflict: {classification.conflicts[0]}]"
            rows.append(
                (
                    label if index == 0 else "",
                    cell(variable.record.path),
                    _shape(variable),
                    classification.kind.value,
                    "yes" if variable.decision.decay else "no",
                    classification.confidence.value,
                    cell(evidence),
                )
            )
    return rows


def _tabulate(rows: list[tuple[Any, ...]], headers: tuple[str, ...], style: str, **options: Any) -> str:
    """tabulate, imported on use: it costs a process 30 ms (most of it its version look-up through
    importlib.metadata, tabulate 0.10), and the plain table of an ASCII model never needs it."""
    from tabulate import tabulate

    return tabulate(rows, headers=headers, tablefmt=style, **options)


def _simple_table(
    rows: list[tuple[str, ...]], headers: tuple[str, ...], right: tuple[bool, ...] | None = None
) -> str | None:
    """tabulate's ``simple`` style, byte for byte, without tabulate's per-cell type guessing (which
    took 0.15 s of a 6,000-variable table, tabulate 0.10); None for what only tabulate should lay
    out: no rows, or a cell that is not printable ASCII (wide characters, whose width tabulate
    measures with wcwidth where it is installed).

    Cells are text (``disable_numparse``) or, in the ``right`` columns, numbers (``colalign``
    "right"), which read the same either way. tabulate strips each cell, makes a column as wide as
    its longest cell or its header plus two (MIN_PADDING), aligns headers as their column, joins
    columns with two spaces and ends each row at its last character."""
    if not rows:
        return None
    right = right or (False,) * len(headers)
    columns = []
    for cells in zip(*rows):
        joined = "".join(cells)
        if not (joined.isascii() and joined.isprintable()):
            return None
        columns.append([cell.strip() for cell in cells])
    widths = [max(len(header) + 2, *map(len, cells)) for header, cells in zip(headers, columns)]
    lines = [
        "  ".join(
            header.rjust(width) if flush else header.ljust(width)
            for header, width, flush in zip(headers, widths, right)
        ).rstrip(),
        "  ".join("-" * width for width in widths),
    ]
    padded = [
        [cell.rjust(width) if flush else cell.ljust(width) for cell in cells]
        for cells, width, flush in zip(columns, widths, right)
    ]
    lines.extend("  ".join(row).rstrip() for row in zip(*padded))
    return "\n".join(lines)


def _table(
    rows: list[tuple[Any, ...]],
    headers: tuple[str, ...],
    style: str,
    right: tuple[bool, ...] | None = None,
    **options: Any,
) -> str:
    """tabulate's layout: the ``simple`` style drawn here where the cells allow (:func:`_simple_table`),
    anything else by tabulate with ``options``."""
    if style == "simple":
        drawn = _simple_table([tuple(str(cell) for cell in row) for row in rows], headers, right)
        if drawn is not None:
            return drawn
    return _tabulate(rows, headers, style, **options)


def _summary(report: ScanReport, style: str, cell: Callable[[object], str]) -> str:
    summary = report.summary()
    rows = [(k.kind.value, k.variables, f"{k.parameters:,}", k.decayed) for k in summary.per_kind]
    rows.append(("total", summary.variables, f"{summary.parameters:,}", summary.decayed_variables))
    right = (False, True, True, True)
    kinds = _table(
        rows,
        ("kind", "variables", "parameters", "decayed"),
        style,
        right,
        colalign=tuple("right" if flush else "left" for flush in right),
    )
    lines = [
        kinds,
        "",
        f"decayed: {summary.decayed_variables} variables ({summary.decayed_parameters:,} parameters); "
        f"excluded: {summary.excluded_variables} variables ({summary.excluded_parameters:,} parameters)",
        f"low confidence: {summary.low_confidence}; conflicting evidence: {summary.conflicting}",
    ]
    for variable in report.variables:
        if variable.classification.conflicts:
            lines.append(
                f"  conflict {cell(variable.record.path)}: {cell('; '.join(variable.classification.conflicts))}"
            )
    optimizer = report.inventory.optimizer
    if optimizer is not None and optimizer.weight_decay:
        lines.append(
            f"saved optimizer: {cell(optimizer.class_name)} with weight_decay={optimizer.weight_decay}; "
            "exclusions are not saved, so after load_model it decays every variable"
        )
    return "\n".join(lines)


def flagged(report: ScanReport) -> list[tuple[ScannedVariable, list[str]]]:
    """The variables a reviewer must look at, each with why, in the report's order: low-confidence and
    conflicting verdicts (the findings scan reports) and decisions an override set against the preset."""
    why: dict[str, list[str]] = {}
    for finding in report.findings():
        if finding.kind in (FindingKind.LOW_CONFIDENCE, FindingKind.CONFLICTING_EVIDENCE):
            why.setdefault(finding.subject, []).append(f"{finding.kind.value}: {finding.detail}")
    for variable in report.variables:
        if variable.decision.reason.startswith("override "):
            why.setdefault(variable.record.path, []).append(variable.decision.reason)
    return [(v, why[v.record.path]) for v in report.variables if v.record.path in why]


def _heading(report: ScanReport, heading: str, cell: Callable[[object], str]) -> list[str]:
    parts = [heading]
    for note in report.notes:
        parts.append(f"note: {cell(note)}")
    for dead in report.policy_findings.dead_overrides:
        parts.append(f"warning: override {cell(dead)} matches no variable")
    for conflict in report.policy_findings.conflicts:
        parts.append(f"warning: {cell(conflict)}")
    return parts


def _findings_rows(report: ScanReport, cell: Callable[[object], str], sep: str) -> list[tuple[str, ...]]:
    return [
        (
            cell(variable.record.path),
            variable.classification.kind.value,
            "yes" if variable.decision.decay else "no",
            variable.classification.confidence.value,
            sep.join(cell(reason) for reason in reasons),
        )
        for variable, reasons in flagged(report)
    ]


_FINDINGS_HEADERS = ("variable", "kind", "decay", "conf", "finding")
NO_FINDINGS = "no findings: every verdict rests on a known class or convention, and no override changed a decision"


def _render(
    report: ScanReport, style: str, heading: str, cell: Callable[[object], str] = safe_text, show_findings: bool = False
) -> str:
    parts = _heading(report, heading, cell)
    parts.append("")
    if show_findings:
        rows = _findings_rows(report, cell, "; ")
        parts.append(_tabulate(rows, _FINDINGS_HEADERS, style, disable_numparse=True) if rows else NO_FINDINGS)
    else:
        parts.append(_table(_rows(report, cell), _HEADERS, style, disable_numparse=True))
    parts.append("")
    parts.append(_summary(report, style, cell))
    return "\n".join(parts) + "\n"


_FINDINGS_COLUMNS = (
    Column("variable", Fit.WRAP, min_width=24),
    Column("kind"),
    Column("decay", style=terminal.decay_style),
    Column("conf", style=terminal.confidence_style),
    Column("finding", Fit.WRAP, min_width=24),
)
_ALL_COLUMNS = (
    Column("variable", Fit.WRAP, min_width=40),
    Column("class", Fit.CUT, min_width=12, drop=2),
    Column("shape", drop=3),
    Column("kind"),
    Column("decay", style=terminal.decay_style),
    Column("conf", style=terminal.confidence_style),
    Column("evidence", Fit.CUT, min_width=24, drop=4),
)
"""The terminal's listing: the path names the layer, so the layer's class alone stands for it."""


def _terminal_rows(report: ScanReport) -> list[tuple[str, ...]]:
    rows = []
    for row, variable in zip(_rows(report, safe_text), report.variables):
        layer_class = variable.record.layer_class
        label = safe_text(layer_class) if row[0] and layer_class else ""
        rows.append((row[1], label, *row[2:]))
    return rows


def _on_terminal(report: ScanReport, view: View) -> str:
    """Findings first (every one whole), then every variable on one line, then the summary."""
    blocks: list[Any] = [
        terminal.text(safe_text(report.source) + f" [{report.loader}]", "bold" if view.color else None)
    ]
    for line in _heading(report, "", safe_text)[1:]:
        blocks.append(terminal.text(line, terminal.WARNING if line.startswith("warning:") else None))
    blocks.append("")
    findings = _findings_rows(report, safe_text, "\n")
    if findings:
        blocks.append(
            terminal.text(f"findings: {len(findings)} of {len(report.variables)} variables", terminal.WARNING)
        )
        blocks.append(terminal.grid(view, _FINDINGS_COLUMNS, findings).table)
        blocks.append("")
    elif view.findings_only:
        blocks += [terminal.text(NO_FINDINGS, terminal.GOOD), ""]
    if not view.findings_only:
        if findings:
            blocks.append(terminal.text("all variables"))
        listing = terminal.grid(view, _ALL_COLUMNS, _terminal_rows(report))
        blocks += [listing.table, *terminal.left_out(listing.dropped, view.width), ""]
    summary = report.summary()
    kinds = [(k.kind.value, str(k.variables), f"{k.parameters:,}", str(k.decayed)) for k in summary.per_kind]
    kinds.append(("total", str(summary.variables), f"{summary.parameters:,}", str(summary.decayed_variables)))
    counts = (
        Column("kind"),
        Column("variables", right=True),
        Column("parameters", right=True),
        Column("decayed", right=True),
    )
    blocks.append(terminal.grid(view, counts, kinds).table)
    blocks.append("")
    for line in _summary(report, "simple", safe_text).split("\n\n", 1)[1].split("\n"):
        problem = line.startswith("low confidence:") and (summary.low_confidence or summary.conflicting)
        blocks.append(
            terminal.text(
                line, terminal.WARNING if problem or line.startswith(("  conflict", "saved optimizer")) else None
            )
        )
    return terminal.paint(view, blocks)


def format_table(report: ScanReport, show: Show | str = Show.ALL, width: int | None = None, color: bool = False) -> str:
    view = View(Show(show), width, color)
    if not view.plain:
        return _on_terminal(report, view)
    return _render(report, "simple", f"{safe_text(report.source)} [{report.loader}]", show_findings=view.findings_only)


def _markdown_cell(value: object) -> str:
    """A "|" in a name from the file would split a Markdown table cell."""
    return safe_text(value).replace("|", "\\|")


def format_markdown(
    report: ScanReport, show: Show | str = Show.ALL, width: int | None = None, color: bool = False
) -> str:
    """Markdown is pasted, not shown on a terminal: it takes ``show`` and ignores width and colour."""
    view = View(Show(show), width, color)
    return _render(
        report,
        "github",
        f"## decay-audit scan: `{_markdown_cell(report.source)}` ({report.loader})",
        cell=_markdown_cell,
        show_findings=view.findings_only,
    )
