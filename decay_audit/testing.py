"""pytest-friendly assertions for a user's own test suite.

    from decay_audit.testing import assert_decay

    def test_weight_decay_is_wired():
        assert_decay(make_training_setup(), preset="no-bias-norm")
"""

from __future__ import annotations

from typing import Any

from decay_audit.verification import VerifyReport, verify


def assert_decay(model_or_setup: Any, **options: Any) -> VerifyReport:
    """Run ``decay_audit.verify`` and raise AssertionError listing every wrong variable."""
    report = verify(model_or_setup, **options)
    if report.mismatches:
        lines = [f"{len(report.mismatches)} of {len(report.measurements)} variables get the wrong weight decay "
                 f"({report.optimizer}, weight_decay={report.weight_decay}, {report.steps} steps):"]
        lines += [f"  {m.path}: {m.outcome.value}: {m.detail} [intent: {m.intent}]" for m in report.mismatches]
        raise AssertionError("\n".join(lines))
    return report
