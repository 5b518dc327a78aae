"""A Keras callback that verifies weight decay on the model ``fit`` is about to train.

    from decay_audit.keras import AuditCallback

    model.fit(x, y, epochs=10, callbacks=[AuditCallback(preset="no-bias-norm")])

Just before the first training step it runs :func:`decay_audit.verify` on the compiled model and
its compiled optimizer (the objects ``fit`` steps, wrappers included), so a leak is caught on the
training run itself rather than on a rebuilt copy of the set-up. The probe restores the weights
and the optimizer state, so training goes on from where it would have started. On a mismatch it
raises :class:`DecayAuditMismatch` (``on_mismatch="raise"``, training stops) or warns with the
same text (``"warn"``, training goes on).

``import keras`` below is the real Keras: this module is ``decay_audit.keras`` and imports are
absolute, so it never imports itself.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import keras

from decay_audit.errors import OptionError
from decay_audit.results import Measurement, VerifyReport
from decay_audit.stages.verify import VerifyOptions, verify

_ON_MISMATCH = ("raise", "warn")
_KEYWORDS = frozenset({"expect_decay", "expect_no_decay", "ordered_expectations"})
_FIELDS = frozenset(f.name for f in dataclasses.fields(VerifyOptions))


class DecayAuditMismatch(AssertionError):
    """Raised by :class:`AuditCallback` when a variable's measured decay differs from the intent.

    An AssertionError, so a test that trains with the callback fails (rather than errors) on it."""

    def __init__(self, report: VerifyReport):
        self.report = report
        super().__init__(mismatch_text(report))


class DecayAuditWarning(UserWarning):
    """What ``on_mismatch="warn"`` warns with: filterable apart from Keras' own warnings."""


def mismatch_line(measurement: Measurement) -> str:
    """One variable: the weight, the verdict, the intent, and the likely fix when known."""
    line = f"{measurement.path}: {measurement.outcome.value}: {measurement.detail} [intent: {measurement.intent}]"
    return f"{line}\n    hint: {measurement.hint}" if measurement.hint else line


def mismatch_text(report: VerifyReport) -> str:
    """The report's mismatches, one line per variable (a hint line under it when there is one)."""
    head = (
        f"{len(report.mismatches)} of {len(report.measurements)} variables get the wrong weight decay "
        f"({report.optimizer}, weight_decay={report.weight_decay}, {report.steps} steps):"
    )
    return "\n".join([head] + [f"  {mismatch_line(m)}" for m in report.mismatches])


class AuditCallback(keras.callbacks.Callback):
    """Verify weight decay once, just before the first training step of ``fit``.

    ``preset``: the intent (``kernels-only``, ``no-bias-norm``, ``ndim``, ``decay-all``, or a
    :class:`~decay_audit.Policy`). ``on_mismatch``: ``"raise"`` (default) or ``"warn"``. Any other
    keyword goes to :func:`decay_audit.verify` (``steps``, ``rules``, ``expect_decay``, ...). The
    report stays on :attr:`report`. It runs once per callback object: a second ``fit`` with the
    same callback trains the same set-up, so it is not measured again.
    """

    def __init__(self, preset: Any = None, on_mismatch: str = "raise", **verify_options: Any):
        super().__init__()
        if on_mismatch not in _ON_MISMATCH:
            raise OptionError("on_mismatch", f"expected 'raise' or 'warn', got {on_mismatch!r}")
        unknown = sorted(set(verify_options) - _FIELDS - _KEYWORDS)
        if unknown:
            raise OptionError("verify_options", f"unknown option(s) {unknown} for decay_audit.verify")
        if "optimizer" in verify_options:
            raise OptionError("optimizer", "the callback verifies the model's compiled optimizer; do not pass one")
        self.preset = preset
        self.on_mismatch = on_mismatch
        self.verify_options = verify_options
        self.report: VerifyReport | None = None

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        """Before the first step fit runs: fit has built the model and optimizer by then (Keras
        3.15 builds them before ``on_train_begin``), and on JAX it reads the weights into its own
        state only after this call, so the restored weights are the ones it trains."""
        if self.report is not None:
            return
        model = self.model
        self.report = verify({"model": model, "optimizer": model.optimizer}, preset=self.preset, **self.verify_options)
        if self.report.ok:
            return
        if self.on_mismatch == "raise":
            raise DecayAuditMismatch(self.report)
        warnings.warn(mismatch_text(self.report), DecayAuditWarning, stacklevel=2)


__all__ = ["AuditCallback", "DecayAuditMismatch", "DecayAuditWarning", "mismatch_line", "mismatch_text"]
