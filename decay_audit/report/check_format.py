"""Rendering of ``decay-audit check`` results (table or JSON)."""

from __future__ import annotations

import json
from dataclasses import asdict

from tabulate import tabulate

from decay_audit.report.sanitize import safe_text
from decay_audit.results import CheckReport


def format_check(result: CheckReport, output_format: str) -> str:
    if output_format == "json":
        document = asdict(result)
        document["findings"] = [
            {"kind": f.kind.value, "subject": f.subject, "detail": f.detail} for f in result.findings
        ]
        return json.dumps(document, indent=2, ensure_ascii=True) + "\n"
    lines = [f"{safe_text(result.source)}: {result.target} rule"]
    rows = [
        (
            safe_text(p.pattern),
            "decay" if p.decays else "exclude",
            len(p.paths),
            safe_text(", ".join(p.paths[:3]) + (" ..." if len(p.paths) > 3 else "")),
        )
        for p in result.patterns
    ]
    if rows:
        lines += ["", tabulate(rows, headers=("pattern", "effect", "matches", "variables"), tablefmt="simple")]
    lines.append("")
    if not result.findings:
        lines.append("no findings: the rule selects exactly what the policy intends")
    else:
        lines.append(
            tabulate(
                [(f.kind.value, safe_text(f.subject), safe_text(f.detail)) for f in result.findings],
                headers=("finding", "subject", "detail"),
                tablefmt="simple",
            )
        )
        lines.append("")
        lines.append(f"{len(result.findings)} finding(s)")
    return "\n".join(lines) + "\n"


def format_check_table(result: CheckReport) -> str:
    return format_check(result, "table")


def format_check_json(result: CheckReport) -> str:
    return format_check(result, "json")
