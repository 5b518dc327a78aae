"""verify's leftovers after the training-dynamics work: L1 penalties on tf_keras (Ftrl's
``l1_regularization_strength``, ``tf_keras.regularizers.L1``, the L1 part of ``L1L2``) reported apart
from decay as on Keras 3; a user's ``jax.jit`` step built with options (``static_argnums``,
``donate_argnums``) re-jitted with those options; the optimizer-name check shared by the cheap checks
and the model-file set-up; a scan that builds an unknown Keras class silent on stderr.

Each expectation is checked against a ground truth measured here apart from verify: the optimizer's
own update from one state with the knob on and off, the penalty's own gradient, or the user's jitted
step compiled twice from one state with and without weight decay.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tf_keras
import tf_keras_setups
from conftest import run_cli
from test_verify_stale_and_jit import GROUND_TRUTH

from decay_audit.errors import OptionError, UsageError
from decay_audit.findings import Outcome
from decay_audit.stages.verify import VerifyOptions, precheck, verify


def by_path(report, path):
    return next(m for m in report.measurements if m.path == path)


# ---- tf_keras: L1 is sparsity, not decay --------------------------------------------------------


def _moves_with_and_without(optimizer_factory, knob):
    """One update of a fixed weight from the same state, with ``knob`` as configured and at zero:
    the largest difference (the knob's own effect, measured on the optimizer alone)."""
    results = []
    for strength in (0.01, 0.0):
        weight = tf.Variable(np.linspace(-1.0, 1.0, 6, dtype="float32"))
        optimizer = optimizer_factory(**{knob: strength})
        optimizer.apply_gradients([(tf.constant(np.full(6, 0.3, "float32")), weight)])
        results.append(weight.numpy())
    return float(np.max(np.abs(results[0] - results[1])))


@pytest.mark.parametrize("legacy", [False, True], ids=["Ftrl", "legacy.Ftrl"])
def test_tf_keras_ftrl_l1_moves_weights_by_itself(legacy):
    owner = tf_keras.optimizers.legacy if legacy else tf_keras.optimizers
    assert _moves_with_and_without(lambda **k: owner.Ftrl(0.05, **k), "l1_regularization_strength") > 1e-4


def _ftrl_new_style():
    optimizer = tf_keras.optimizers.Ftrl(0.05, weight_decay=0.1, l1_regularization_strength=0.01)
    optimizer.exclude_from_weight_decay(var_names=["bias", "LayerNorm"])
    return tf_keras_setups.compiled(optimizer)


def test_tf_keras_ftrl_l1_is_its_own_column_not_a_double_decay():
    report = verify(_ftrl_new_style(), preset="no-bias-norm", steps=3)
    assert report.backend == "tf_keras"
    assert report.ok, [(m.path, m.outcome, m.detail) for m in report.mismatches]
    assert "Ftrl l1_regularization_strength=0.01" in report.decay_sources
    kernel, bias = by_path(report, "dense1/kernel"), by_path(report, "dense1/bias")
    assert kernel.measured == "decoupled" and kernel.l1 == "yes" and kernel.l1_steps == 3
    assert bias.measured == "none" and bias.l1 == "yes" and "sparsity, not weight decay" in bias.detail
    assert bias.l1_by == ("Ftrl l1_regularization_strength=0.01",) and bias.coupled_by == ()

    counted = verify(_ftrl_new_style(), preset="no-bias-norm", steps=3, count_l1=True)
    assert by_path(counted, "dense1/kernel").outcome is Outcome.DOUBLE_DECAY
    assert by_path(counted, "dense1/bias").outcome is Outcome.DECAYED_AGAINST_INTENT
    assert by_path(counted, "dense1/bias").l1 == "counted"


def test_tf_keras_legacy_ftrl_l1_apart_and_its_l2_still_decay():
    """legacy.Ftrl's l2 is coupled decay on every variable it updates (biases included); its l1 is not."""
    optimizer = tf_keras.optimizers.legacy.Ftrl(0.05, l1_regularization_strength=0.01, l2_regularization_strength=0.05)
    report = verify(tf_keras_setups.compiled(optimizer), preset="no-bias-norm", steps=2)
    assert set(report.decay_sources) == {"Ftrl l1_regularization_strength=0.01", "Ftrl l2_regularization_strength=0.05"}
    kernel, bias = by_path(report, "dense1/kernel"), by_path(report, "dense1/bias")
    assert kernel.outcome is Outcome.OK and kernel.measured == "coupled" and kernel.l1 == "yes"
    assert bias.outcome is Outcome.DECAYED_AGAINST_INTENT
    assert bias.coupled_by == ("Ftrl l2_regularization_strength=0.05",)
    assert bias.l1_by == ("Ftrl l1_regularization_strength=0.01",)


def _adamw():
    optimizer = tf_keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias", "LayerNorm"])
    return optimizer


def test_tf_keras_l1_regularizer_gradient_is_constant_not_proportional():
    """Ground truth: the L1 penalty's gradient is ``l1 * sign(w)``, the same size for every weight."""
    model = tf_keras_setups.model(regularizer=tf_keras.regularizers.L1(1e-2))
    kernel = model.get_layer("dense1").kernel
    with tf.GradientTape() as tape:
        penalty = tf.add_n(model.losses)
    gradient = tape.gradient(penalty, kernel).numpy()
    np.testing.assert_allclose(gradient, 1e-2 * np.sign(kernel.numpy()), rtol=1e-6)


def test_tf_keras_l1_regularizer_is_reported_apart():
    regularizer = tf_keras.regularizers.L1(1e-2)
    report = verify(tf_keras_setups.compiled(_adamw(), regularizer=regularizer), preset="no-bias-norm", steps=2)
    kernel = by_path(report, "dense1/kernel")
    assert kernel.outcome is Outcome.OK and kernel.l1 == "yes" and kernel.measured == "decoupled", kernel.detail
    assert kernel.l1_by == ("model regularizer L1(l1=0.01) on dense1/kernel",)
    counted = verify(
        tf_keras_setups.compiled(_adamw(), regularizer=regularizer), preset="no-bias-norm", steps=2, count_l1=True
    )
    assert by_path(counted, "dense1/kernel").outcome is Outcome.DOUBLE_DECAY


def test_tf_keras_l1l2_is_split_into_its_l1_and_its_l2_part():
    regularizer = tf_keras.regularizers.L1L2(l1=1e-2, l2=1e-2)
    report = verify(tf_keras_setups.compiled(_adamw(), regularizer=regularizer), preset="no-bias-norm", steps=2)
    assert [s for s in report.decay_sources if "dense1" in s] == [
        "model regularizer L1L2(l1=0.01, l2=0.01) (its L1 part) on dense1/kernel",
        "model regularizer L1L2(l1=0.01, l2=0.01) (its L2 part) on dense1/kernel",
    ]
    kernel = by_path(report, "dense1/kernel")
    # the L2 part under weight_decay is a double decay; the L1 part is reported apart
    assert kernel.outcome is Outcome.DOUBLE_DECAY and kernel.l1 == "yes"
    assert kernel.coupled_by == ("model regularizer L1L2(l1=0.01, l2=0.01) (its L2 part) on dense1/kernel",)
    assert kernel.l1_by == ("model regularizer L1L2(l1=0.01, l2=0.01) (its L1 part) on dense1/kernel",)


def test_tf_keras_l1l2_split_keeps_the_penalty_value():
    """While verify's knobs are installed, the model's penalty is still the user's L1L2 penalty."""
    from decay_audit.probe.backends.tf_keras import TfKerasBackend
    from decay_audit.probe.setup import setup_from_object

    regularizer = tf_keras.regularizers.L1L2(l1=1e-2, l2=3e-2)
    model = tf_keras_setups.compiled(_adamw(), regularizer=regularizer)
    expected = float(tf.add_n(model.losses))
    with TfKerasBackend().switchable(setup_from_object(model, "L1L2 model")):
        assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-6)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-6)


# ---- the optimizer-name check, one helper ------------------------------------------------------


def test_unknown_optimizer_name_is_refused_the_same_way_by_both_checks(tmp_path):
    import keras

    from decay_audit.probe.setup import optimizer_name, setup_from_model_file

    assert optimizer_name("AdamW") == "adamw"
    model_path = tmp_path / "m.keras"
    model_path.write_bytes(b"")  # precheck needs the path to exist; it reads nothing
    with pytest.raises(OptionError) as cheap:
        precheck(str(model_path), None, VerifyOptions(optimizer="adamx"))
    inputs = keras.Input((3,))
    keras.Model(inputs, keras.layers.Dense(2)(inputs)).save(model_path)
    with pytest.raises(OptionError) as late:
        setup_from_model_file(model_path, "adamx", None, None)
    assert str(cheap.value) == str(late.value)
    assert "unknown optimizer 'adamx' (one of sgd, adam, adamw" in str(cheap.value)


# ---- a user's jax.jit step built with options ---------------------------------------------------

JIT_OPTIONS = '''
"""The keras.io JAX loop, its step jitted with static_argnums (a Python flag) and donate_argnums."""
import jax
import keras
import numpy as np


def build(leak=False, weight_decay=0.1, warm=True):
    seeded = keras.initializers.GlorotUniform
    inputs = keras.Input((6,))
    features = keras.layers.Dense(5, name="dense1", kernel_initializer=seeded(seed=1))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense2", kernel_initializer=seeded(seed=2))(features))
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=weight_decay)
    if not leak:
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name == "bias"])
    loss_fn = keras.losses.MeanSquaredError()
    optimizer.build(model.trainable_variables)

    def compute_loss_and_updates(trainable_variables, non_trainable_variables, x, y, training):
        y_pred, non_trainable_variables = model.stateless_call(
            trainable_variables, non_trainable_variables, x, training=training
        )
        return loss_fn(y, y_pred), non_trainable_variables

    grad_fn = jax.value_and_grad(compute_loss_and_updates, has_aux=True)

    def train_step_fn(state, data, training):
        if not training:  # a Python branch on a static argument: traced as an array it would fail
            raise ValueError("training must be True")
        trainable_variables, non_trainable_variables, optimizer_variables = state
        x, y = data
        (loss, non_trainable_variables), grads = grad_fn(trainable_variables, non_trainable_variables, x, y, training)
        trainable_variables, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable_variables
        )
        return loss, (trainable_variables, non_trainable_variables, optimizer_variables)

    train_step = jax.jit(train_step_fn, static_argnums=(2,), donate_argnums=(0,))

    def step(model, optimizer, x, y):
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        _, (trainable, non_trainable, optimizer_values) = train_step(state, (x, y), True)
        for variable, value in zip(model.trainable_variables, trainable):
            variable.assign(value)
        for variable, value in zip(model.non_trainable_variables, non_trainable):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, optimizer_values):
            variable.assign(value)

    rng = np.random.default_rng(0)
    if warm:
        step(model, optimizer, rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 3)).astype("float32"))
    return {"model": model, "optimizer": optimizer, "train_step": step, "data_loss": loss_fn}


def make():
    return build()


def make_leaking():
    return build(leak=True)
'''


@pytest.fixture(scope="module")
def jit_options_setup(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("jit_options")
    # named as test_verify_stale_and_jit's set-up, with the same build(): its ground-truth script runs on it
    (folder / "jit_loop.py").write_text(textwrap.dedent(JIT_OPTIONS))
    return folder


def test_jit_with_options_ground_truth(jit_options_setup):
    """The user's own jitted step from one state, with weight_decay 0.1 and 0: kernels shrink by
    lr*wd*w (ratio 1), excluded biases by nothing, leaking ones by lr*wd*b."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", GROUND_TRUTH, str(jit_options_setup)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    truth = json.loads(result.stdout.strip().splitlines()[-1])
    for leak, ratios in truth.items():
        for path, ratio in ratios.items():
            decayed = path.endswith("kernel") or leak == "True"
            assert ratio == pytest.approx(1.0 if decayed else 0.0, abs=0.05), (leak, path)


def test_jit_with_static_and_donated_arguments_is_rejitted_with_them(jit_options_setup):
    spec = f"{jit_options_setup}/jit_loop.py"
    right = run_cli("verify", "--setup", f"{spec}:make", "--preset", "no-bias-norm", "--backend", "jax")
    assert right.returncode == 0, right.stdout + right.stderr
    assert "step failed" not in right.stdout + right.stderr
    assert "probed through jax.jit of its undecorated function" in right.stdout
    leaking = run_cli("verify", "--setup", f"{spec}:make_leaking", "--preset", "no-bias-norm", "--backend", "jax")
    assert leaking.returncode == 1, leaking.stdout + leaking.stderr
    rows = {line.split()[0]: line for line in leaking.stdout.splitlines() if line.startswith("dense")}
    assert "decayed-against-intent" in rows["dense1/bias"] and "decayed-against-intent" in rows["dense2/bias"]
    assert " ok " in rows["dense1/kernel"] and " ok " in rows["dense2/kernel"]


def test_jit_options_are_read_from_the_jitted_function():
    import jax

    from decay_audit.probe.backends.jax import jit_options

    def step(state, flag):
        return state

    options = jit_options(jax.jit(step, static_argnums=(1,), donate_argnums=(0,)), "step")
    assert options is not None
    assert options["static_argnums"] == (1,) and options["donate_argnums"] == (0,)
    assert options["static_argnames"] == ("flag",) and "in_shardings" not in options
    assert jit_options(jax.jit(step), "step") == {}
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    sharded = jit_options(jax.jit(step, in_shardings=(device, device), out_shardings=device), "step")
    assert sharded == {"in_shardings": (device, device), "out_shardings": device}


def test_a_rejit_that_fails_without_known_options_names_the_function():
    from decay_audit.probe.backends.jax import _unknown_options_guard

    def failing(*args):
        raise TypeError("Attempted boolean conversion of traced array")

    guarded = _unknown_options_guard(failing, "train_step")
    with pytest.raises(UsageError) as caught:
        guarded(1)
    message = str(caught.value)
    assert "'train_step'" in message and "step failed" not in message and "\n" not in message


# ---- scan: building an unknown Keras class prints nothing ----------------------------------------


def test_scan_building_an_unknown_keras_class_is_silent_on_stderr(tmp_path):
    """STFTSpectrogram is not in the layer table: the reader builds it, which initialises
    TensorFlow's devices; their notices (cuInit, oneDNN) must not reach stderr, even with
    TF_CPP_MIN_LOG_LEVEL asking for every message."""
    import keras

    inputs = keras.Input((64, 1))
    outputs = keras.layers.STFTSpectrogram(frame_length=16, frame_step=8, fft_length=16, trainable=True, name="stft")(
        inputs
    )
    path = tmp_path / "stft.keras"
    keras.Model(inputs, outputs).save(path)
    result = run_cli("scan", str(path), "--format", "json", env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    document = json.loads(result.stdout)["result"]
    assert [v["path"] for v in document["variables"]] == ["stft/real_kernel", "stft/imag_kernel"]
