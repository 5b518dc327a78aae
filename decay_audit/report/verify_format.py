"""Rendering of ``decay-audit verify``: table, JSON, and JUnit XML (one test case per variable)."""

from __future__ import annotations

import json
from dataclasses import asdict
from xml.etree import ElementTree

from tabulate import tabulate

from decay_audit.report.sanitize import safe_text
from decay_audit.results import VerifyReport


def verify_dict(report: VerifyReport) -> dict:
    document = asdict(report)
    for measurement, row in zip(report.measurements, document["measurements"]):
        row["outcome"] = measurement.outcome.value
        row["measured"] = measurement.measured
    document["ok"] = report.ok
    document["mismatches"] = len(report.mismatches)
    return document


def format_verify_json(report: VerifyReport) -> str:
    return json.dumps(verify_dict(report), indent=2, ensure_ascii=True) + "\n"


def format_verify_table(report: VerifyReport) -> str:
    """One row per variable; ``rule`` is the intent rule that produced the expectation (preset and kind,
    an override, a rule file, an --expect glob), so a wrong verdict shows which rule to question."""
    rows = [
        (
            safe_text(m.path),
            "decay" if m.expected_decay else "no decay",
            safe_text(m.intent),
            m.measured,
            "" if m.decoupled_ratio is None else f"{m.decoupled_ratio:.4g}",
            m.outcome.value,
            safe_text(m.detail),
        )
        for m in report.measurements
    ]
    lines = [
        f"{safe_text(report.setup)}: {report.optimizer}, weight_decay={report.weight_decay}, "
        f"{report.steps} steps on {report.device}, backend {safe_text(report.backend)}"
    ]
    lines += [f"note: {safe_text(n)}" for n in report.notes]
    lines += [f"warning: {safe_text(s)} matches no variable" for s in report.dead_selectors]
    lines += [
        "",
        tabulate(
            rows, headers=("variable", "expected", "rule", "measured", "ratio", "verdict", "detail"), tablefmt="simple"
        ),
        "",
    ]
    lines.append(
        "all variables get the intended decay"
        if report.ok
        else f"{len(report.mismatches)} of {len(report.measurements)} variables get the wrong decay"
    )
    return "\n".join(lines) + "\n"


def format_junit(report: VerifyReport) -> str:
    suite = ElementTree.Element(
        "testsuite",
        name="decay-audit verify",
        tests=str(len(report.measurements) + len(report.dead_selectors)),
        failures=str(len(report.mismatches)),
        skipped=str(len(report.dead_selectors)),
    )
    for measurement in report.measurements:
        case = ElementTree.SubElement(
            suite, "testcase", classname="decay-audit verify", name=safe_text(measurement.path)
        )
        if not measurement.ok:
            failure = ElementTree.SubElement(case, "failure", message=measurement.outcome.value)
            failure.text = safe_text(f"{measurement.detail} [intent: {measurement.intent}]")
    for selector in report.dead_selectors:
        case = ElementTree.SubElement(
            suite, "testcase", classname="decay-audit verify intent", name=safe_text(selector)
        )
        ElementTree.SubElement(case, "skipped", message="matches no variable")
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
