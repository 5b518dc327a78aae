"""``--format table`` and ``--format markdown``: grouped by layer, then the summary.

Both are one renderer with a different tabulate style, so they never drift apart.
"""

from __future__ import annotations

from tabulate import tabulate

from decay_audit.audit import ScanReport, ScannedVariable
from decay_audit.report.sanitize import safe_text

_HEADERS = ("layer", "variable", "shape", "kind", "decay", "conf", "evidence")


def _shape(variable: ScannedVariable) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in variable.record.shape) + ")"


def _rows(report: ScanReport) -> list[tuple[str, ...]]:
    rows = []
    groups: dict[tuple[str | None, str | None], list[ScannedVariable]] = {}
    for variable in report.variables:
        groups.setdefault((variable.record.layer, variable.record.layer_class), []).append(variable)
    for (layer, layer_class), members in groups.items():
        label = safe_text(layer or "-") + (f" ({safe_text(layer_class)})" if layer_class else "")
        for index, variable in enumerate(members):
            classification = variable.classification
            evidence = classification.evidence[0] if classification.evidence else ""
            if classification.conflicts:
                evidence += f" [conflict: {classification.conflicts[0]}]"
            rows.append((
                label if index == 0 else "",
                safe_text(variable.record.path),
                _shape(variable),
                classification.kind.value,
                "yes" if variable.decision.decay else "no",
                classification.confidence.value,
                safe_text(evidence),
            ))
    return rows


def _summary(report: ScanReport, style: str) -> str:
    summary = report.summary()
    rows = [(k.kind.value, k.variables, f"{k.parameters:,}", k.decayed) for k in summary.per_kind]
    rows.append(("total", summary.variables, f"{summary.parameters:,}", summary.decayed_variables))
    kinds = tabulate(rows, headers=("kind", "variables", "parameters", "decayed"), tablefmt=style,
                     colalign=("left", "right", "right", "right"))
    lines = [
        kinds,
        "",
        f"decayed: {summary.decayed_variables} variables ({summary.decayed_parameters:,} parameters); "
        f"excluded: {summary.excluded_variables} variables ({summary.excluded_parameters:,} parameters)",
        f"low confidence: {summary.low_confidence}; conflicting evidence: {summary.conflicting}",
    ]
    for variable in report.variables:
        if variable.classification.conflicts:
            lines.append(f"  conflict {safe_text(variable.record.path)}: "
                         f"{safe_text('; '.join(variable.classification.conflicts))}")
    optimizer = report.inventory.optimizer
    if optimizer is not None and optimizer.weight_decay:
        lines.append(f"saved optimizer: {safe_text(optimizer.class_name)} with weight_decay={optimizer.weight_decay}; "
                     "exclusions are not saved, so after load_model it decays every variable")
    return "\n".join(lines)


def _render(report: ScanReport, style: str, heading: str) -> str:
    parts = [heading]
    for note in report.notes:
        parts.append(f"note: {safe_text(note)}")
    parts.append("")
    parts.append(tabulate(_rows(report), headers=_HEADERS, tablefmt=style))
    parts.append("")
    parts.append(_summary(report, style))
    return "\n".join(parts) + "\n"


def format_table(report: ScanReport) -> str:
    return _render(report, "simple", f"{safe_text(report.source)} [{report.loader}]")


def format_markdown(report: ScanReport) -> str:
    return _render(report, "github", f"## decay-audit scan: `{safe_text(report.source)}` ({report.loader})")
