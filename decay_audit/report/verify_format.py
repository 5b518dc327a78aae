"""Rendering of ``decay-audit verify``: table, JSON, and JUnit XML (one test case per variable)."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any
from xml.etree import ElementTree

from tabulate import tabulate

from decay_audit.report import terminal
from decay_audit.report.sanitize import safe_text
from decay_audit.report.terminal import Column, Fit, Show, View
from decay_audit.results import Measurement, VerifyReport


def hint_of(measurement: Measurement) -> str | None:
    """The likely cause and fix of a wrong verdict, when the probe could tell."""
    return getattr(measurement, "hint", None)


def verify_dict(report: VerifyReport) -> dict:
    """The ``result`` of ``verify --format json``: the record's ``measurements`` are ``variables``
    there, as every command calls its per-variable list."""
    document = asdict(report)
    rows = document.pop("measurements")
    for measurement, row in zip(report.measurements, rows):
        row["outcome"] = measurement.outcome.value
        row["measured"] = measurement.measured
        row["hint"] = hint_of(measurement)
        row["l1"] = measurement.l1
    document["variables"] = rows
    document["updated_steps"] = report.updated_steps
    for step in document["probed_steps"]:  # a learning rate the probe could not read is NaN: null in JSON
        step["learning_rates"] = [r if math.isfinite(r) else None for r in step["learning_rates"]]
    document["ok"] = report.ok
    document["mismatches"] = len(report.mismatches)
    return document


def format_verify_json(report: VerifyReport) -> str:
    from decay_audit.report.json_format import dumps, envelope

    return dumps(envelope("verify", verify_dict(report)))


_HEADERS = ("variable", "expected", "rule", "measured", "ratio", "l1", "verdict", "detail")


def _detail(measurement: Measurement, separator: str) -> str:
    hint = hint_of(measurement)
    return safe_text(measurement.detail) + (f"{separator}hint: {safe_text(hint)}" if hint else "")


def _shows_l1(report: VerifyReport) -> bool:
    """The ``l1`` column appears when an L1 penalty moved some variable (or ``--count-l1`` was given):
    an always-empty column would only push the detail off the screen."""
    return report.count_l1 or any(m.l1_steps for m in report.measurements)


def _without_l1(cells: tuple[Any, ...]) -> tuple[Any, ...]:
    index = _HEADERS.index("l1")
    return cells[:index] + cells[index + 1 :]


def _row(measurement: Measurement, separator: str = "; ") -> tuple[Any, ...]:
    m = measurement
    return (
        safe_text(m.path),
        "decay" if m.expected_decay else "no decay",
        safe_text(m.intent),
        m.measured,
        "" if m.decoupled_ratio is None else f"{m.decoupled_ratio:.4g}",
        m.l1,
        m.outcome.value,
        _detail(m, separator),
    )


def _heading(report: VerifyReport) -> list[str]:
    lines = [
        f"{safe_text(report.setup)}: {report.optimizer}, weight_decay={report.weight_decay}, "
        f"{report.steps} steps on {report.device}, backend {safe_text(report.backend)}"
    ]
    lines += steps_lines(report)
    lines += [f"note: {safe_text(n)}" for n in report.notes]
    lines += [f"warning: {safe_text(s)} matches no variable" for s in report.dead_selectors]
    return lines


def _numbers(values: list[str]) -> str:
    """``1, 2, 3`` (runs of one value as ``0.001 x8``): one line even for a long probe."""
    runs: list[tuple[str, int]] = []
    for value in values:
        if runs and runs[-1][0] == value:
            runs[-1] = (value, runs[-1][1] + 1)
        else:
            runs.append((value, 1))
    return ", ".join(value if count == 1 else f"{value} x{count}" for value, count in runs)


def steps_lines(report: VerifyReport) -> list[str]:
    """How the probed steps ran: how many updated the weights (gradient accumulation, a learning
    rate of 0), the learning rate each used, and the EMA overwrites. Per-step figures (lr*wd, the
    step counts in a detail) are read against these."""
    probed = report.probed_steps
    if not probed:
        return []
    updated = [s.index for s in probed if s.updated]
    text = f"steps: {len(updated)} of {len(probed)} updated the weights"
    if 0 < len(updated) < len(probed):
        text += f" (step{'s' if len(updated) > 1 else ''} {', '.join(str(i) for i in updated)})"
    rates = [" / ".join(f"{r:.3g}" for r in s.learning_rates) or "?" for s in probed]
    text += f"; learning rate per step: {_numbers(rates)}"
    lines = [text]
    overwrites = [s.index for s in probed if s.ema_overwrite]
    if overwrites:
        lines.append(
            f"steps: EMA overwrite after step{'s' if len(overwrites) > 1 else ''} "
            f"{', '.join(str(i) for i in overwrites)} (use_ema with ema_overwrite_frequency: the weights were "
            "replaced by their moving average; the decay rate is measured on the other steps)"
        )
    return lines


def _closing(report: VerifyReport) -> str:
    return (
        "all variables get the intended decay"
        if report.ok
        else f"{len(report.mismatches)} of {len(report.measurements)} variables get the wrong decay"
    )


def format_verify_table(
    report: VerifyReport, show: Show | str = Show.ALL, width: int | None = None, color: bool = False
) -> str:
    """One row per variable; ``rule`` is the intent rule that produced the expectation (preset and kind,
    an override, a rule file, an --expect glob), so a wrong verdict shows which rule to question. A
    wrong verdict's likely cause and fix follows its detail. ``show=findings``: the wrong ones only."""
    view = View(Show(show), width, color)
    if not view.plain:
        return _on_terminal(report, view)
    shown = report.mismatches if view.findings_only else report.measurements
    lines = _heading(report) + [""]
    if shown or not view.findings_only:
        rows, headers = [_row(m) for m in shown], _HEADERS
        if not _shows_l1(report):
            rows, headers = [_without_l1(r) for r in rows], _without_l1(headers)
        lines += [tabulate(rows, headers=headers, tablefmt="simple"), ""]
    lines.append(_closing(report))
    return "\n".join(lines) + "\n"


_ALL_COLUMNS = (
    Column("variable", Fit.WRAP, min_width=40),
    Column("expected", style=terminal.decay_style),
    Column("rule", Fit.CUT, min_width=16, drop=2),
    Column("measured"),
    Column("ratio", right=True, drop=1),
    Column("l1", drop=1),
    Column("verdict", style=terminal.verdict_style),
    Column("detail", Fit.CUT, min_width=24, drop=3),
)


def _on_terminal(report: VerifyReport, view: View) -> str:
    """The wrong verdicts first, each whole with its hint; then every variable on one line."""
    heading = _heading(report)
    blocks: list[Any] = [terminal.text(heading[0], "bold" if view.color else None)]
    blocks += [terminal.text(line, terminal.WARNING if line.startswith("warning:") else None) for line in heading[1:]]
    blocks.append("")
    if report.mismatches:
        blocks.append(
            terminal.text(f"wrong decay: {len(report.mismatches)} of {len(report.measurements)}", terminal.PROBLEM)
        )
        for m in report.mismatches:
            expected = "decay" if m.expected_decay else "no decay"
            title = [(safe_text(m.path), "bold"), (m.outcome.value, terminal.verdict_style(m.outcome.value))]
            body: list[tuple[str, str | None]] = [
                (f"expected {expected} ({safe_text(m.intent)}), measured {m.measured}", None),
                (safe_text(m.detail), None),
            ]
            hint = hint_of(m)
            if hint:
                body.append((f"hint: {safe_text(hint)}", "cyan"))
            blocks.append(terminal.entry(view, title, body))
        blocks.append("")
    if not view.findings_only:
        if report.mismatches:
            blocks.append(terminal.text("all variables"))
        columns, rows = _ALL_COLUMNS, [tuple(str(c) for c in _row(m)) for m in report.measurements]
        if not _shows_l1(report):
            columns, rows = _without_l1(columns), [_without_l1(r) for r in rows]
        listing = terminal.grid(view, columns, rows)
        blocks += [listing.table, *terminal.left_out(listing.dropped, view.width), ""]
    blocks.append(terminal.text(_closing(report), terminal.GOOD if report.ok else terminal.PROBLEM))
    return terminal.paint(view, blocks)


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
            hint = hint_of(measurement)
            failure.text = safe_text(
                f"{measurement.detail} [intent: {measurement.intent}]" + (f" hint: {hint}" if hint else "")
            )
    for selector in report.dead_selectors:
        case = ElementTree.SubElement(
            suite, "testcase", classname="decay-audit verify intent", name=safe_text(selector)
        )
        ElementTree.SubElement(case, "skipped", message="matches no variable")
    return ElementTree.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"
