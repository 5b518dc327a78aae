"""``--format table`` and ``--format markdown``: grouped by layer, then the summary.

Both are one renderer with a different tabulate style, so they never drift apart.
"""

from __future__ import annotations

from collections.abc import Callable

from tabulate import tabulate

from decay_audit.report.sanitize import safe_text
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


def _summary(report: ScanReport, style: str, cell: Callable[[object], str]) -> str:
    summary = report.summary()
    rows = [(k.kind.value, k.variables, f"{k.parameters:,}", k.decayed) for k in summary.per_kind]
    rows.append(("total", summary.variables, f"{summary.parameters:,}", summary.decayed_variables))
    kinds = tabulate(
        rows,
        headers=("kind", "variables", "parameters", "decayed"),
        tablefmt=style,
        colalign=("left", "right", "right", "right"),
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


def _render(report: ScanReport, style: str, heading: str, cell: Callable[[object], str] = safe_text) -> str:
    parts = [heading]
    for note in report.notes:
        parts.append(f"note: {cell(note)}")
    for dead in report.policy_findings.dead_overrides:
        parts.append(f"warning: override {cell(dead)} matches no variable")
    for conflict in report.policy_findings.conflicts:
        parts.append(f"warning: {cell(conflict)}")
    parts.append("")
    parts.append(tabulate(_rows(report, cell), headers=_HEADERS, tablefmt=style, disable_numparse=True))
    parts.append("")
    parts.append(_summary(report, style, cell))
    return "\n".join(parts) + "\n"


def format_table(report: ScanReport) -> str:
    return _render(report, "simple", f"{safe_text(report.source)} [{report.loader}]")


def _markdown_cell(value: object) -> str:
    """A "|" in a name from the file would split a Markdown table cell."""
    return safe_text(value).replace("|", "\\|")


def format_markdown(report: ScanReport) -> str:
    return _render(
        report,
        "github",
        f"## decay-audit scan: `{_markdown_cell(report.source)}` ({report.loader})",
        cell=_markdown_cell,
    )
