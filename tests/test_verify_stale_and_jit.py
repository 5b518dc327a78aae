"""verify measures the step training really runs: a ``fit`` step traced before a layer was frozen,
and a user's ``jax.jit`` loop (the keras.io "custom training loop in JAX" guide).

Ground truth is measured apart from verify: the stale step by running ``fit`` itself and comparing it
with the probe's reproduction from the same state; the jitted loop by two separate compilations of the
guide's step from the same state, one with ``weight_decay`` and one without.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import run_cli

from decay_audit.findings import Outcome, rule_for
from decay_audit.probe.backends.tensorflow import stale_train_step, trainability_as_traced
from decay_audit.stages.verify import verify

REPO = Path(__file__).resolve().parent.parent


# ---- a stale traced step (Keras 3 on TensorFlow) -------------------------------------------------


def _transfer_model(freeze_after_fit: bool, recompile: bool = False):
    """A base (conv + BatchNorm) under a head, fitted once, then ``base.trainable = False``."""
    keras.utils.set_random_seed(0)
    base_in = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(4, 3, name="conv1")(base_in)
    hidden = keras.layers.BatchNormalization(name="bn1")(hidden)
    base = keras.Model(base_in, keras.layers.GlobalAveragePooling2D()(hidden), name="base")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(base(inputs)))
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer, "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 8, 8, 3)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    if not freeze_after_fit:
        base.trainable = False
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    base.trainable = False
    if recompile:
        model.compile(model.optimizer, "mse")
    return model, x[:4], y[:4]


def _values(model):
    return {v.path: np.array(v.numpy()) for v in model.variables}


def test_fit_after_a_freeze_without_compile_updates_the_frozen_layer():
    """The trap itself (Keras 3.15), and the probe's reproduction of it matches fit bit for bit."""
    model, x, y = _transfer_model(freeze_after_fit=True)
    state = list(model.variables) + list(model.optimizer.variables)
    start = [np.array(v.numpy()) for v in state]
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # the cached step: what fit runs next
    by_fit = _values(model)
    paths = [v.path for v in model.variables]
    assert not np.array_equal(by_fit["conv1/kernel"], start[paths.index("conv1/kernel")])
    assert not np.array_equal(by_fit["bn1/moving_mean"], start[paths.index("bn1/moving_mean")])
    for variable, value in zip(state, start):
        variable.assign(value)
    stale = stale_train_step(model)
    assert stale is not None and stale.layers == ("base",)
    with trainability_as_traced(model, stale):
        fresh = model._make_function(model.train_step)  # a new trace, trainability as when fit traced
        import tensorflow as tf

        fresh(iter(tf.data.Dataset.from_tensors((x, y))))
    reproduced = _values(model)
    for path in ("conv1/kernel", "bn1/gamma", "bn1/moving_mean", "head/kernel"):
        np.testing.assert_allclose(reproduced[path], by_fit[path], rtol=0, atol=1e-6, err_msg=path)
    assert not model.get_layer("base").trainable  # flags put back


def test_verify_reports_the_stale_step_and_its_fix():
    model, _, _ = _transfer_model(freeze_after_fit=True)
    report = verify(model, preset="no-bias-norm", steps=2)
    outcomes = {m.path: m.outcome for m in report.measurements}
    assert outcomes == {
        "conv1/kernel": Outcome.STALE_STEP,
        "conv1/bias": Outcome.STALE_STEP,
        "bn1/gamma": Outcome.STALE_STEP,
        "bn1/beta": Outcome.STALE_STEP,
        "head/kernel": Outcome.OK,
        "head/bias": Outcome.OK,
    }
    kernel = next(m for m in report.measurements if m.path == "conv1/kernel")
    assert kernel.decoupled_ratio == pytest.approx(1.0, abs=0.05)  # still decayed at the configured rate
    assert kernel.hint == "fit reuses a step traced before layer base was frozen; call compile() again"
    assert any("bn1/moving_mean" in note for note in report.notes)
    assert not model.get_layer("base").trainable and len(model.trainable_variables) == 2
    assert rule_for(Outcome.STALE_STEP).name == "stale-step"


@pytest.mark.parametrize("when", ["recompiled", "frozen before fit"])
def test_no_stale_step_when_fit_traced_the_frozen_model(when):
    model, _, _ = _transfer_model(freeze_after_fit=when == "recompiled", recompile=when == "recompiled")
    if when == "frozen before fit":
        model, _, _ = _transfer_model(freeze_after_fit=False)
    assert stale_train_step(model) is None
    report = verify(model, preset="no-bias-norm", steps=2)
    assert report.ok and {m.path for m in report.measurements} == {"head/kernel", "head/bias"}


# ---- a user's jax.jit loop -----------------------------------------------------------------------

JIT_LOOP = '''
"""The keras.io "custom training loop in JAX" guide: stateless_call + optimizer.stateless_apply in @jax.jit."""
import jax
import keras
import numpy as np


def build(leak=False, hidden=False, weight_decay=0.1, warm=True):
    seeded = keras.initializers.GlorotUniform  # seeded initializers: set_random_seed would import TensorFlow
    inputs = keras.Input((6,))
    features = keras.layers.Dense(5, name="dense1", kernel_initializer=seeded(seed=1))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense2", kernel_initializer=seeded(seed=2))(features))
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=weight_decay)
    if not leak:
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name == "bias"])
    loss_fn = keras.losses.MeanSquaredError()
    optimizer.build(model.trainable_variables)

    def compute_loss_and_updates(trainable_variables, non_trainable_variables, x, y):
        y_pred, non_trainable_variables = model.stateless_call(trainable_variables, non_trainable_variables, x)
        return loss_fn(y, y_pred), non_trainable_variables

    grad_fn = jax.value_and_grad(compute_loss_and_updates, has_aux=True)

    @jax.jit
    def train_step(state, data):
        trainable_variables, non_trainable_variables, optimizer_variables = state
        x, y = data
        (loss, non_trainable_variables), grads = grad_fn(trainable_variables, non_trainable_variables, x, y)
        trainable_variables, optimizer_variables = optimizer.stateless_apply(
            optimizer_variables, grads, trainable_variables
        )
        return loss, (trainable_variables, non_trainable_variables, optimizer_variables)

    jitted = {"step": train_step}  # hidden: out of verify's reach

    def step(model, optimizer, x, y):
        state = (
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            [v.value for v in optimizer.variables],
        )
        _, (trainable, non_trainable, optimizer_values) = (jitted["step"] if hidden else train_step)(state, (x, y))
        for variable, value in zip(model.trainable_variables, trainable):
            variable.assign(value)
        for variable, value in zip(model.non_trainable_variables, non_trainable):
            variable.assign(value)
        for variable, value in zip(optimizer.variables, optimizer_values):
            variable.assign(value)

    rng = np.random.default_rng(0)
    if warm:  # the guide's loop has run: the step was traced with weight_decay baked in
        step(model, optimizer, rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 3)).astype("float32"))
    return {"model": model, "optimizer": optimizer, "train_step": step, "data_loss": loss_fn}


def make():
    return build()


def make_leaking():
    return build(leak=True)


def make_hidden():
    return build(hidden=True)
'''

GROUND_TRUTH = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import jit_loop

def one_step(weight_decay, leak):
    setup = jit_loop.build(leak=leak, weight_decay=weight_decay, warm=False)  # same seeded start
    model, optimizer = setup["model"], setup["optimizer"]
    rng = np.random.default_rng(1)
    for v in model.trainable_variables:  # zero biases cannot show decay
        v.assign(rng.normal(0.0, 0.5, size=v.shape).astype("float32"))
    x, y = rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 3)).astype("float32")
    before = {v.path: np.array(v.value) for v in model.trainable_variables}
    setup["train_step"](model, optimizer, x, y)
    return before, {v.path: np.array(v.value) for v in model.trainable_variables}

truth = {}
for leak in (False, True):
    before, with_decay = one_step(0.1, leak)
    _, without = one_step(0.0, leak)
    truth[str(leak)] = {
        path: float(np.sum((without[path] - with_decay[path]) * before[path]) / (1e-2 * 0.1 * np.sum(before[path] ** 2)))
        for path in before
    }
print(json.dumps(truth))
"""


@pytest.fixture(scope="module")
def jit_loop(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("jit")
    (folder / "jit_loop.py").write_text(textwrap.dedent(JIT_LOOP))
    return folder


def test_jit_loop_ground_truth(jit_loop):
    """Two compilations of the guide's step from one state, with and without weight_decay: the kernels
    shrink by lr*wd*w (ratio 1), the excluded biases by nothing, the leaking ones by lr*wd*b."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run(
        [sys.executable, "-c", GROUND_TRUTH, str(jit_loop)], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    truth = json.loads(result.stdout.strip().splitlines()[-1])
    for leak, ratios in truth.items():
        for path, ratio in ratios.items():
            decayed = path.endswith("kernel") or leak == "True"
            assert ratio == pytest.approx(1.0 if decayed else 0.0, abs=0.05), (leak, path)


def test_jit_loop_is_retraced_with_the_knob_as_a_runtime_value(jit_loop):
    right = run_cli("verify", "--setup", f"{jit_loop}/jit_loop.py:make", "--preset", "no-bias-norm", "--backend", "jax")
    assert right.returncode == 0, right.stdout + right.stderr
    assert "never switched on" not in right.stdout
    assert "probed through jax.jit of its undecorated function" in right.stdout
    leaking = run_cli(
        "verify", "--setup", f"{jit_loop}/jit_loop.py:make_leaking", "--preset", "no-bias-norm", "--backend", "jax"
    )
    assert leaking.returncode == 1, leaking.stdout + leaking.stderr
    rows = {line.split()[0]: line for line in leaking.stdout.splitlines() if line.startswith("dense")}
    assert "decayed-against-intent" in rows["dense1/bias"] and "decayed-against-intent" in rows["dense2/bias"]
    assert " ok " in rows["dense1/kernel"] and " ok " in rows["dense2/kernel"]


def test_a_knob_the_step_never_reads_at_run_time_is_said_in_one_line(jit_loop):
    """The jitted step out of reach: every twin equals the real step bit for bit; no verdict."""
    hidden = run_cli(
        "verify", "--setup", f"{jit_loop}/jit_loop.py:make_hidden", "--preset", "no-bias-norm", "--backend", "jax"
    )
    assert hidden.returncode == 2, hidden.stdout + hidden.stderr
    lines = hidden.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in hidden.stderr
    assert "AdamW weight_decay=0.1 is not a runtime value of the step step" in lines[0]
    assert "never switched on" not in hidden.stdout + hidden.stderr


JAX_FREEZE = """
import json
import keras
import numpy as np
from decay_audit.errors import SetupError
from decay_audit.stages.verify import verify

def frozen_after_fit():
    base_in = keras.Input((8, 8, 3))
    hidden = keras.layers.BatchNormalization(name="bn1")(keras.layers.Conv2D(4, 3, name="conv1")(base_in))
    base = keras.Model(base_in, keras.layers.GlobalAveragePooling2D()(hidden), name="base")
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(base(inputs)))
    model.compile(keras.optimizers.AdamW(1e-2, weight_decay=0.1), "mse")
    rng = np.random.default_rng(0)
    data = rng.normal(size=(4, 8, 8, 3)).astype("float32"), rng.normal(size=(4, 2)).astype("float32")
    model.fit(*data, batch_size=4, verbose=0)
    base.trainable = False
    return model, data

model, data = frozen_after_fit()
try:
    model.fit(*data, batch_size=4, verbose=0)
    fit = "ran"
except ValueError as exc:
    fit = "raised"
try:
    verify(frozen_after_fit()[0], preset="no-bias-norm", steps=2)
    said = ""
except SetupError as exc:
    said = str(exc)
print(json.dumps({"fit": fit, "verify": said}))
"""


def test_on_jax_a_freeze_after_fit_is_said_as_fit_would_fail():
    """Keras 3.15 on JAX: fit raises after the freeze (the optimizer was built on the old list); verify
    says so in one line with the fix instead of a step traceback."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", JAX_FREEZE], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["fit"] == "raised"
    assert "the optimizer was built on 6 variables and the model now trains 2" in outcome["verify"]
    assert outcome["verify"].endswith("compile() with a new optimizer")
