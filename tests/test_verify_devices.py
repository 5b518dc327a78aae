"""verify on set-ups that place their own devices: MirroredStrategy over two logical CPUs (the
TensorFlow guide's way), ``keras.distribution.DataParallel`` over two host devices on JAX, and the
multi-process strategies it refuses in one line.

Devices are fixed once a framework initialises them, so every case runs in a fresh interpreter.
Ground truth is measured apart from verify: the set-up's own ``fit`` step from one state, with and
without ``weight_decay``, each replica read with ``strategy.experimental_local_results``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import run_cli

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent

MIRRORED = '''
"""The TensorFlow guide: two logical CPUs made at import time, MirroredStrategy over them."""
import keras
import tensorflow as tf

cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


class OnReplicaOne(keras.Model):
    """Shrinks dense2's bias by hand on the second replica only: the replicas drift apart."""

    def train_step(self, data):
        logs = super().train_step(data)
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        local = self.get_layer("dense2").bias.value._get()
        local.assign_sub(tf.cast(replica, local.dtype) * 0.01 * local)
        return logs


def build(weight_decay=0.1, exclude=True, model_class=keras.Model):
    with strategy.scope():
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(5, name="dense1", bias_initializer="ones")(inputs)
        outputs = keras.layers.Dense(3, name="dense2", bias_initializer="ones")(hidden)
        model = model_class(inputs, outputs)
        optimizer = keras.optimizers.AdamW(1e-2, weight_decay=weight_decay)
        if exclude:
            optimizer.exclude_from_weight_decay(var_names=["bias"])
        model.compile(optimizer, "mse")
    return model


def make():
    return build()


def make_leaking():
    return build(exclude=False)


def make_drifting():
    return build(model_class=OnReplicaOne)
'''

GROUND_TRUTH = """
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import mirrored

def one_fit_step(weight_decay):
    model = mirrored.build(weight_decay=weight_decay)
    for variable in model.trainable_variables:  # one seeded start for both runs
        variable.assign(np.random.default_rng(0).normal(0.0, 0.5, size=variable.shape).astype("float32"))
    start = {v.path: np.array(v.numpy()) for v in model.trainable_variables}
    rng = np.random.default_rng(1)
    model.fit(rng.normal(size=(4, 6)).astype("float32"), rng.normal(size=(4, 3)).astype("float32"), batch_size=4, verbose=0)
    strategy = mirrored.strategy
    replicas = {v.path: [np.array(r) for r in strategy.experimental_local_results(v.value)] for v in model.trainable_variables}
    return start, replicas

start, decayed = one_fit_step(0.1)
_, plain = one_fit_step(0.0)
ratios = {
    path: [float(np.sum((p - d) * start[path]) / (1e-2 * 0.1 * np.sum(start[path] ** 2))) for p, d in zip(plain[path], decayed[path])]
    for path in start
}
print(json.dumps(ratios))
"""


@pytest.fixture(scope="module")
def setups(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("devices")
    (folder / "mirrored.py").write_text(textwrap.dedent(MIRRORED))
    return folder


def test_mirrored_ground_truth_per_replica(setups):
    """fit's own step on two replicas: kernels shrink by lr*wd*w on both (ratio 1), biases on none."""
    result = subprocess.run(
        [sys.executable, "-c", GROUND_TRUTH, str(setups)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "KERAS_BACKEND": "tensorflow"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    ratios = json.loads(result.stdout.strip().splitlines()[-1])
    for path, per_replica in ratios.items():
        assert len(per_replica) == 2, path
        expected = 1.0 if path.endswith("kernel") else 0.0
        assert per_replica == pytest.approx([expected, expected], abs=0.02), path


def _table(stdout: str) -> dict[str, str]:
    return {line.split()[0]: line for line in stdout.splitlines() if line.startswith("dense")}


def test_a_setup_that_makes_its_own_devices_is_probed_on_them(setups):
    """Imported before anything initialises TensorFlow's devices; the header names the replicas."""
    result = run_cli("verify", "--setup", f"{setups}/mirrored.py:make", "--preset", "no-bias-norm")
    assert result.returncode == 0, result.stdout + result.stderr
    header = result.stdout.splitlines()[0]
    assert "on 2 replicas (MirroredStrategy on CPU:0, CPU:1)" in header
    rows = _table(result.stdout)
    assert "decoupled" in rows["dense1/kernel"] and " 1 " in rows["dense1/kernel"]
    assert " none " in rows["dense1/bias"] and result.stderr.strip() == ""


def test_mirrored_leaking_biases_and_drifting_replicas(setups):
    leaking = run_cli("verify", "--setup", f"{setups}/mirrored.py:make_leaking", "--preset", "no-bias-norm")
    assert leaking.returncode == 1, leaking.stdout + leaking.stderr
    rows = _table(leaking.stdout)
    assert {p for p, line in rows.items() if "decayed-against-intent" in line} == {"dense1/bias", "dense2/bias"}
    drifting = run_cli("verify", "--setup", f"{setups}/mirrored.py:make_drifting", "--preset", "no-bias-norm")
    assert drifting.returncode == 1, drifting.stdout + drifting.stderr
    rows = _table(drifting.stdout)
    assert {p for p, line in rows.items() if "replicas-disagree" in line} == {"dense2/bias"}
    # the drift itself perturbs the next steps' figures: only the kernels' decay being measured is pinned
    assert "decoupled" in rows["dense1/kernel"] and "decoupled" in rows["dense2/kernel"]


DATA_PARALLEL = """
import jax
import keras

keras.distribution.set_distribution(keras.distribution.DataParallel(devices=jax.devices("cpu")))


def make():
    inputs = keras.Input((6,))
    model = keras.Model(inputs, keras.layers.Dense(3, name="dense2")(keras.layers.Dense(5, name="dense1")(inputs)))
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    model.compile(optimizer, "mse")
    return model
"""


def test_jax_data_parallel_names_its_devices(tmp_path):
    (tmp_path / "data_parallel.py").write_text(textwrap.dedent(DATA_PARALLEL))
    result = run_cli(
        "verify",
        "--setup",
        f"{tmp_path}/data_parallel.py:make",
        "--preset",
        "no-bias-norm",
        "--backend",
        "jax",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on 2 devices (DataParallel on cpu:0, cpu:1: 2 replicas), backend jax" in result.stdout.splitlines()[0]
    rows = _table(result.stdout)
    assert "decoupled" in rows["dense2/kernel"] and " none " in rows["dense2/bias"]


@pytest.mark.parametrize(
    ("variable", "value", "words", "instead"),
    [
        (
            "TF_CONFIG",
            json.dumps({"cluster": {"worker": ["localhost:1", "localhost:2"]}, "task": {"type": "worker", "index": 0}}),
            "TF_CONFIG names a cluster of 2 tasks and verify probes one process",
            "tf.distribute.MirroredStrategy",
        ),
        ("JAX_NUM_PROCESSES", "2", "JAX_NUM_PROCESSES=2: jax.distributed runs several processes", "DataParallel"),
    ],
)
def test_multi_process_setups_are_refused_before_import(setups, variable, value, words, instead):
    """The set-up would wait at import for workers verify does not start: one line, exit 2."""
    result = run_cli("verify", "--setup", f"{setups}/mirrored.py:make", env={variable: value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and instead in lines[0]
