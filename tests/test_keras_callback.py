"""The Keras callback, ``verify`` on a factory, and the one-line hints a mismatch carries."""

from __future__ import annotations

import sys
import warnings

import builders
import keras
import numpy as np
import pytest

import decay_audit
from decay_audit.errors import OptionError, SetupError, Stage
from decay_audit.findings import Outcome
from decay_audit.keras import AuditCallback, DecayAuditMismatch, DecayAuditWarning

RNG = np.random.default_rng(0)
X = RNG.normal(size=(16, 8)).astype("float32")
Y = RNG.normal(size=(16, 4)).astype("float32")


def _compiled(exclude: bool, model: keras.Model | None = None) -> keras.Model:
    """AdamW; with ``exclude`` the biases are excluded by object, as no-bias-norm intends."""
    model = model or builders.seed_model()
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    if exclude:
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name == "bias"])
    model.compile(optimizer=optimizer, loss="mse")
    return model


class _Record(keras.callbacks.Callback):
    """Copies the weights when the first step is about to run (after the audit, which comes first)."""

    def __init__(self) -> None:
        super().__init__()
        self.at_first_step: list[np.ndarray] | None = None
        self.steps = 0

    def on_train_batch_begin(self, batch, logs=None):
        if self.at_first_step is None:
            self.at_first_step = [np.array(v) for v in self.model.variables]
        self.steps += 1


def test_keras_resolves_to_the_real_keras_inside_the_module():
    module = sys.modules["decay_audit.keras"]
    assert module.keras is sys.modules["keras"] and module.keras is not module
    assert issubclass(AuditCallback, keras.callbacks.Callback)


def test_correct_setup_passes_training_continues_and_weights_are_restored():
    model = _compiled(exclude=True)
    before = [np.array(v) for v in model.variables]
    audit, record = AuditCallback(preset="no-bias-norm"), _Record()
    history = model.fit(X, Y, batch_size=4, epochs=1, verbose=0, callbacks=[audit, record])
    assert audit.report is not None and audit.report.ok, audit.report
    assert record.steps == 4 and len(history.history["loss"]) == 1
    assert record.at_first_step is not None and len(record.at_first_step) == len(before)
    for original, seen in zip(before, record.at_first_step):
        np.testing.assert_array_equal(original, seen)  # the probe left nothing behind: fit starts from here
    assert int(model.optimizer.iterations) == 4  # the probe's steps are not counted as training steps


def test_leaking_setup_raises_with_the_report_lines():
    model = _compiled(exclude=False)
    before = [np.array(v) for v in model.variables]
    audit = AuditCallback(preset="no-bias-norm")
    with pytest.raises(DecayAuditMismatch) as raised:
        model.fit(X, Y, batch_size=4, epochs=1, verbose=0, callbacks=[audit])
    text = str(raised.value)
    assert text.startswith("2 of 4 variables get the wrong weight decay (AdamW, weight_decay=0.1, 3 steps):")
    assert "dense1/bias: decayed-against-intent" in text and "dense2/bias: decayed-against-intent" in text
    assert isinstance(raised.value, AssertionError) and raised.value.report is audit.report
    for original, after in zip(before, model.variables):
        np.testing.assert_array_equal(original, np.array(after))  # raised before the first step


def test_leaking_setup_warns_and_trains_on():
    model = _compiled(exclude=False)
    audit, record = AuditCallback(preset="no-bias-norm", on_mismatch="warn"), _Record()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, Y, batch_size=4, epochs=1, verbose=0, callbacks=[audit, record])
    ours = [w for w in caught if issubclass(w.category, DecayAuditWarning)]
    assert len(ours) == 1 and "dense1/bias: decayed-against-intent" in str(ours[0].message)
    assert record.steps == 4


def test_callback_refuses_bad_options_in_one_line():
    with pytest.raises(OptionError, match="on_mismatch: expected 'raise' or 'warn', got 'ignore'"):
        AuditCallback(on_mismatch="ignore")
    with pytest.raises(OptionError, match=r"unknown option\(s\) \['colour'\]"):
        AuditCallback(colour="blue")


# --- verify(train.make) ---------------------------------------------------------------------------


def make_correct():
    return _compiled(exclude=True)


def test_verify_accepts_a_zero_argument_factory():
    report = decay_audit.verify(make_correct, preset="no-bias-norm")
    assert report.ok and report.setup == f"{__name__}.make_correct"


def test_a_factory_that_raises_is_a_setup_error_at_make():
    def broken():
        raise ZeroDivisionError("no model today")

    with pytest.raises(SetupError) as raised:
        decay_audit.verify(broken)
    assert raised.value.stage is Stage.MAKE and "ZeroDivisionError: no model today" in str(raised.value)
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    with pytest.raises(SetupError, match="make\\(\\) must return"):
        decay_audit.verify(lambda: 42)


# --- hints ----------------------------------------------------------------------------------------


def _hints(report) -> dict[str, str | None]:
    return {m.path: m.hint for m in report.mismatches}


def test_hint_for_exclusions_on_the_loss_scale_wrapper():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = builders.seed_model()
        model.compile(optimizer=keras.optimizers.AdamW(1e-2, weight_decay=0.1), loss="mse")
        model.optimizer.exclude_from_weight_decay(var_names=["bias"])  # on the wrapper: no effect
        report = decay_audit.verify(model, preset="no-bias-norm")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    hints = _hints(report)
    assert set(hints) == {"dense1/bias", "dense2/bias"}
    assert hints["dense1/bias"] == (
        "exclusions set on the LossScaleOptimizer wrapper do not reach the inner AdamW: "
        "call exclude_from_weight_decay on the inner optimizer before compile() wraps it"
    )


def test_hint_for_var_names_that_match_nothing_on_this_backend():
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias$", "gamma"])  # TensorFlow searches 'dense1/bias:0'
    model = builders.seed_model()
    model.compile(optimizer=optimizer, loss="mse")
    report = decay_audit.verify(model, preset="no-bias-norm")
    hint = _hints(report)["dense1/bias"]
    assert hint is not None
    # 'gamma' matches nothing either (no norm layer here), but 'bias$' is the one written for a bias
    assert hint.startswith("var_names 'bias$' matches no variable on tensorflow, where Keras searches 'dense1/bias:0'")
    assert "decay-audit rules MODEL --target keras" in hint and "var_list" in hint


def test_hint_for_a_regularizer_under_weight_decay():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, name="dense1", kernel_regularizer=keras.regularizers.L2(1e-3))(inputs)
    model = _compiled(exclude=True, model=keras.Model(inputs, keras.layers.Dense(4, name="dense2")(hidden)))
    report = decay_audit.verify(model, preset="no-bias-norm")
    hints = _hints(report)
    assert {m.path: m.outcome for m in report.mismatches} == {"dense1/kernel": Outcome.DOUBLE_DECAY}
    assert hints["dense1/kernel"] is not None and hints["dense1/kernel"].endswith(
        "both decay dense1/kernel: drop the kernel_regularizer or set weight_decay=None"
    )


def test_no_hint_where_the_cause_is_not_visible():
    report = decay_audit.verify(_compiled(exclude=False), preset="no-bias-norm")  # no exclusion was tried
    assert set(_hints(report)) == {"dense1/bias", "dense2/bias"} and set(_hints(report).values()) == {None}
