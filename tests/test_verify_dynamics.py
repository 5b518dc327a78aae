"""verify under the training dynamics a run adds on top of the optimizer: EMA overwrites, float8
statistics, L1 penalties, gradient accumulation and warm-up schedules, and a probe whose memory
does not grow with the steps.

Each expectation is checked against a ground truth measured here by hand: a twin step done eagerly
on one variable, from the same state, with the knob on and off.
"""

from __future__ import annotations

import dataclasses
import json

import keras
import numpy as np
import pytest
from conftest import run_cli

from decay_audit.findings import Outcome
from decay_audit.probe.setup import setup_from_object
from decay_audit.probe.twin import _SpilledState, run_probe
from decay_audit.report import OutputFormat, Subject, render
from decay_audit.stages.verify import verify


def by_path(report, path):
    return next(m for m in report.measurements if m.path == path)


def _model(name="m", regularizer=None):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, name="dense1", kernel_regularizer=regularizer)(inputs)
    hidden = keras.layers.LayerNormalization(name="ln")(hidden)
    return keras.Model(inputs, keras.layers.Dense(2, name="dense2")(hidden), name=name)


def _compiled(optimizer, model=None, keep=("kernel",)):
    """Everything but ``keep`` excluded from weight decay (var_list: the same on every backend)."""
    model = model or _model()
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name not in keep])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def _hand_twin_ratios(make_optimizer, knob, steps, gradient=0.3):
    """Per step, (knob on - knob off) / (-lr*wd*w) for one variable, from the same state each step:
    the optimizer applied eagerly, so the attribute is read at every call."""
    weight = keras.Variable(np.linspace(-1.0, 1.0, 12, dtype="float32").reshape(3, 4), name="w")
    optimizer = make_optimizer()
    optimizer.build([weight])
    value = float(getattr(optimizer, knob))
    state = [weight, *optimizer.variables]
    grad = np.full((3, 4), gradient, dtype="float32")
    ratios = []
    for _ in range(steps):
        start = [np.array(v.numpy()) for v in state]
        rate = float(np.asarray(optimizer.learning_rate)) * value
        setattr(optimizer, knob, 0.0)
        optimizer.apply([grad], [weight])
        off = np.array(weight.numpy(), dtype=np.float64)
        for variable, saved in zip(state, start):
            variable.assign(saved)
        setattr(optimizer, knob, value)
        optimizer.apply([grad], [weight])
        on = np.array(weight.numpy(), dtype=np.float64)
        w = start[0].astype(np.float64)
        ratios.append(float(-np.sum((on - off) * w)) / (rate * float(np.sum(w * w))))
    return ratios


# ---- EMA with overwrite --------------------------------------------------------------------------


def _ema_optimizer():
    return keras.optimizers.AdamW(1e-2, weight_decay=0.1, use_ema=True, ema_overwrite_frequency=2)


def test_ema_overwrite_steps_are_reported_and_left_out_of_the_ratio():
    # ground truth: ratio 1 on ordinary steps; on the overwrite step (iterations 1: (1 + 1) % 2 == 0)
    # the weights become their moving average, which holds 1 - ema_momentum (0.01) of the decay
    truth = _hand_twin_ratios(_ema_optimizer, "weight_decay", 3)
    assert truth[0] == pytest.approx(1.0, rel=1e-3) and truth[2] == pytest.approx(1.0, rel=1e-3)
    assert truth[1] == pytest.approx(0.01, rel=0.05)

    report = verify(_compiled(_ema_optimizer()), preset="kernels-only", steps=3)
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    assert [s.ema_overwrite for s in report.probed_steps] == [False, True, False]
    kernel = by_path(report, "dense1/kernel")
    assert kernel.outcome is Outcome.OK and kernel.decoupled_ratio == pytest.approx(1.0, rel=1e-3)
    assert kernel.ema_overwrite_steps == 1 and "EMA overwrite" in kernel.detail
    assert by_path(report, "dense1/bias").measured == "none"
    table = render(Subject.VERIFY, OutputFormat.TABLE, report)
    assert "steps: EMA overwrite after step 2" in table


def test_a_leaking_bias_is_still_caught_under_ema():
    report = verify(_compiled(_ema_optimizer(), keep=("kernel", "bias")), preset="kernels-only", steps=3)
    assert {m.path for m in report.mismatches} == {"dense1/bias", "dense2/bias"}
    assert by_path(report, "dense1/bias").outcome is Outcome.DECAYED_AGAINST_INTENT


# ---- float8: overwrite_with_gradient statistics ----------------------------------------------------


def test_float8_scales_and_amax_histories_are_statistics_under_no_bias_norm():
    model = _model()
    model.quantize("float8")
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    flagged = {v.path for v in model.trainable_variables if getattr(v, "overwrite_with_gradient", False)}
    assert flagged and all(p.endswith(("_scale", "_amax_history")) for p in flagged)
    report = verify(_compiled(optimizer, model, keep=("kernel",)), preset="no-bias-norm", steps=2)
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    for path in flagged:
        measurement = by_path(report, path)
        assert not measurement.expected_decay and "overwrite_with_gradient" in measurement.intent
        assert measurement.measured == "none"


class _Gain(keras.layers.Layer):
    """A trainable variable named like a weight that Keras overwrites with its gradient."""

    def build(self, shape):
        self.mix = self.add_weight(name="mix", shape=(shape[-1],), initializer="ones", overwrite_with_gradient=True)

    def call(self, x):
        return x * self.mix


def test_overwrite_with_gradient_is_the_evidence_not_the_name():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(2, name="dense")(_Gain(name="gain")(inputs))
    model = keras.Model(inputs, outputs)
    # ground truth: the optimizer never decays it (Keras takes it out of the update before decay)
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    report = verify(_compiled(optimizer, model, keep=("kernel", "mix")), preset="decay-all", steps=2)
    gain = by_path(report, "gain/mix")
    assert gain.outcome is Outcome.OK and gain.measured == "none" and not gain.expected_decay, gain.detail
    assert "overwrite_with_gradient" in gain.intent
    # an explicit expectation still wins: Keras never decays it, so asking for decay is a mismatch
    asked = verify(
        _compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), model, keep=("kernel", "mix")),
        preset="decay-all",
        steps=2,
        expect_decay=["gain/mix"],
    )
    assert by_path(asked, "gain/mix").outcome is Outcome.NOT_DECAYED


# ---- L1 is sparsity, not decay ----------------------------------------------------------------------


def _ftrl():
    return keras.optimizers.Ftrl(0.05, weight_decay=0.1, l1_regularization_strength=0.01)


def test_ftrl_l1_is_reported_apart_and_counted_only_when_asked():
    # ground truth: Ftrl's L1 moves a variable (here: with weight decay already on) at its own twin
    weight = keras.Variable(np.linspace(-1.0, 1.0, 6, dtype="float32"), name="b")
    optimizer = keras.optimizers.Ftrl(0.05, l1_regularization_strength=0.01)
    optimizer.build([weight])
    start = [np.array(v.numpy()) for v in (weight, *optimizer.variables)]
    optimizer.apply([np.full(6, 0.3, "float32")], [weight])
    on = np.array(weight.numpy())
    for variable, saved in zip((weight, *optimizer.variables), start):
        variable.assign(saved)
    optimizer.l1_regularization_strength = 0.0
    optimizer.apply([np.full(6, 0.3, "float32")], [weight])
    assert np.max(np.abs(on - weight.numpy())) > 1e-4

    report = verify(_compiled(_ftrl()), preset="kernels-only", steps=3)
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    kernel, bias = by_path(report, "dense1/kernel"), by_path(report, "dense1/bias")
    assert kernel.measured == "decoupled" and kernel.l1 == "yes" and kernel.l1_steps == 3
    assert bias.measured == "none" and bias.l1 == "yes" and "sparsity, not weight decay" in bias.detail
    assert bias.l1_by == ("Ftrl l1_regularization_strength=0.01",)

    counted = verify(_compiled(_ftrl()), preset="kernels-only", steps=3, count_l1=True)
    assert by_path(counted, "dense1/kernel").outcome is Outcome.DOUBLE_DECAY
    assert by_path(counted, "dense1/bias").outcome is Outcome.DECAYED_AGAINST_INTENT
    assert by_path(counted, "dense1/bias").l1 == "counted" and counted.count_l1


def test_ftrl_l2_strengths_stay_decay():
    optimizer = keras.optimizers.Ftrl(0.05, l2_regularization_strength=0.05)
    report = verify(_compiled(optimizer), preset="kernels-only", steps=2)
    bias = by_path(report, "dense1/bias")
    assert bias.outcome is Outcome.DECAYED_AGAINST_INTENT and bias.l1 == ""  # Ftrl's l2 ignores exclusions


def test_l1_regularizer_and_the_l1_part_of_l1l2():
    l1_only = _compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), _model(regularizer=keras.regularizers.L1(1e-2)))
    report = verify(l1_only, preset="kernels-only", steps=2)
    kernel = by_path(report, "dense1/kernel")
    assert kernel.outcome is Outcome.OK and kernel.l1 == "yes" and kernel.measured == "decoupled", kernel.detail
    counted = verify(
        _compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), _model(regularizer=keras.regularizers.L1(1e-2))),
        preset="kernels-only",
        steps=2,
        count_l1=True,
    )
    assert by_path(counted, "dense1/kernel").outcome is Outcome.DOUBLE_DECAY

    both = keras.regularizers.L1L2(l1=1e-2, l2=1e-2)
    split = verify(
        _compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), _model(regularizer=both)),
        preset="kernels-only",
        steps=2,
    )
    assert [s for s in split.decay_sources if "L1L2" in s] == [
        "model regularizer L1L2(l1=0.01, l2=0.01) (its L1 part) on dense1/kernel",
        "model regularizer L1L2(l1=0.01, l2=0.01) (its L2 part) on dense1/kernel",
    ]
    kernel = by_path(split, "dense1/kernel")
    # the L2 part under weight_decay is a double decay; the L1 part is reported apart
    assert kernel.outcome is Outcome.DOUBLE_DECAY and kernel.l1 == "yes"
    assert kernel.coupled_by == ("model regularizer L1L2(l1=0.01, l2=0.01) (its L2 part) on dense1/kernel",)


def test_cli_count_l1_and_the_l1_field_in_json_and_sarif(tmp_path):
    setup = tmp_path / "ftrl_setup.py"
    setup.write_text(
        "import keras\n"
        "def make():\n"
        "    keras.utils.set_random_seed(0)\n"
        "    inputs = keras.Input((8,))\n"
        "    model = keras.Model(inputs, keras.layers.Dense(2, name='dense')(inputs))\n"
        "    optimizer = keras.optimizers.Ftrl(0.05, weight_decay=0.1, l1_regularization_strength=0.01)\n"
        "    optimizer.exclude_from_weight_decay(var_list=[model.get_layer('dense').bias])\n"
        "    model.compile(optimizer=optimizer, loss='mse')\n"
        "    return model\n"
    )
    command = ["verify", "--setup", f"{setup}:make", "--steps", "2"]
    plain = run_cli(*command, "--format", "json")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    from decay_audit.schemas import load_schema

    jsonschema = pytest.importorskip("jsonschema")
    document = json.loads(plain.stdout)
    jsonschema.validate(document, load_schema("verify"))
    rows = {v["path"]: v for v in document["result"]["variables"]}
    assert rows["dense/bias"]["l1"] == "yes" and rows["dense/bias"]["outcome"] == "ok"
    assert document["result"]["updated_steps"] == 2 and document["result"]["count_l1"] is False
    counted = run_cli(*command, "--count-l1", "--format", "sarif")
    assert counted.returncode == 1, counted.stdout + counted.stderr
    results = json.loads(counted.stdout)["runs"][0]["results"]
    properties = {r["locations"][0]["logicalLocations"][0]["name"]: r["properties"] for r in results}
    assert properties["dense/bias"]["l1"] == "counted" and properties["dense/kernel"]["l1"] == "counted"


# ---- accumulation and schedules: what the steps did -------------------------------------------------


def test_gradient_accumulation_reports_the_updating_steps_and_the_raised_step_count():
    optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.01, gradient_accumulation_steps=4)
    report = verify(_compiled(optimizer), preset="kernels-only", steps=1)
    assert report.ok and report.steps == 8
    assert [s.updated for s in report.probed_steps] == [False, False, False, True] * 2
    assert report.updated_steps == 2
    assert all(s.learning_rates == pytest.approx((1e-3,)) for s in report.probed_steps)
    assert any("raised from 1 to 8" in note and "gradient_accumulation_steps=4" in note for note in report.notes)
    kernel = by_path(report, "dense1/kernel")
    assert kernel.decoupled_steps == 2 and "decoupled in 2 of 8 steps (2 of the 8 updated the weights)" in kernel.detail
    table = render(Subject.VERIFY, OutputFormat.TABLE, report)
    assert "steps: 2 of 8 updated the weights (steps 4, 8); learning rate per step: 0.001 x8" in table


def test_warm_up_from_zero_reports_the_learning_rate_of_every_step():
    schedule = keras.optimizers.schedules.CosineDecay(0.0, 100, warmup_target=1e-2, warmup_steps=10)
    truth = [float(schedule(step)) for step in range(3)]  # 0, 0.001, 0.002: the schedule at each iteration
    report = verify(_compiled(keras.optimizers.AdamW(schedule, weight_decay=0.1)), preset="kernels-only", steps=3)
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    assert [s.learning_rates[0] for s in report.probed_steps] == pytest.approx(truth)
    assert [s.updated for s in report.probed_steps] == [False, True, True]  # lr 0 moves nothing
    kernel = by_path(report, "dense1/kernel")
    assert kernel.decoupled_steps == 2 and kernel.decoupled_ratio == pytest.approx(1.0, rel=1e-3)
    assert "lr*wd from 0.0001 to 0.0002 per step" in kernel.detail
    table = render(Subject.VERIFY, OutputFormat.TABLE, report)
    assert "steps: 2 of 3 updated the weights (steps 2, 3); learning rate per step: 0, 0.001, 0.002" in table


# ---- memory: nothing kept per step but figures --------------------------------------------------------


def _arrays_in(value, seen=None):
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return 1
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_arrays_in(getattr(value, f.name), seen) for f in dataclasses.fields(value) if f.compare)
    if isinstance(value, (tuple, list)):
        return sum(_arrays_in(v, seen) for v in value)
    return 0


def test_the_probe_keeps_figures_not_arrays_and_restores_the_state():
    model = _compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1, use_ema=True))
    setup = setup_from_object(model, "m")
    before = [np.array(v.numpy()) for v in [*model.variables, *model.optimizer.variables]]
    run = run_probe(setup, steps=3)
    assert _arrays_in(run) == 0
    after = [np.array(v.numpy()) for v in [*model.variables, *model.optimizer.variables]]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    kernel = run.paths.index("dense1/kernel")
    assert all(d.weight_norm > 0 and d.effects[0].present for d in (step[kernel] for step in run.steps))


def test_the_state_spilled_to_disk_comes_back_bit_for_bit():
    import ml_dtypes

    values = [
        np.array(3.0, dtype="float32"),
        np.arange(6, dtype="int64").reshape(2, 3),
        (np.arange(5) / 3).astype(ml_dtypes.bfloat16),
        np.zeros((0, 4), dtype="float32"),
    ]
    spilled = _SpilledState(values)
    try:
        for index, value in enumerate(values):
            back = spilled.value(index)
            assert back.dtype == value.dtype and back.shape == value.shape
            assert back.tobytes() == value.tobytes()
    finally:
        spilled.close()
