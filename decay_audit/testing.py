"""pytest-friendly assertions for a user's own test suite.

    from decay_audit.testing import assert_decay

    def test_weight_decay_is_wired():
        assert_decay(make_training_setup(), preset="no-bias-norm")

A wrong decay is an ``AssertionError`` (the test fails); a set-up that cannot be probed
raises :class:`decay_audit.SetupError` naming the stage (the test errors), so a crash is
never mistaken for a finding.
"""

from __future__ import annotations

from typing import Any

from decay_audit.stages.verify import VerifyReport, verify


def assert_decay(model_or_setup: Any, *, strict: bool = False, **options: Any) -> VerifyReport:
    """Run ``decay_audit.verify`` and raise AssertionError listing every wrong variable, with the intent rule
    behind its expectation; ``strict=True`` also fails on intent rules that match no variable."""
    report = verify(model_or_setup, **options)
    lines = []
    if report.mismatches:
        lines.append(
            f"{len(report.mismatches)} of {len(report.measurements)} variables get the wrong weight decay "
            f"({report.optimizer}, weight_decay={report.weight_decay}, {report.steps} steps):"
        )
        lines += [f"  {m.path}: {m.outcome.value}: {m.detail} [intent: {m.intent}]" for m in report.mismatches]
    if strict and report.dead_selectors:
        lines.append("intent rules that match no variable: " + ", ".join(report.dead_selectors))
    if lines:
        raise AssertionError("\n".join(lines))
    return report
