"""verify on every framework people train Keras models with: tf_keras (Keras 2) and Hugging Face
TF optimizers, Keras 3 on JAX and PyTorch, and on a GPU.

Keras fixes its backend when first imported, so the JAX (and torch) cases run in ONE
subprocess per backend (``backend_cases.py`` as a script) and are compared with the same
cases run here, on TensorFlow.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import backend_cases
import pytest
import tf_keras
import tf_keras_setups
from conftest import run_cli

from decay_audit.findings import Outcome
from decay_audit.stages.verify import verify

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
NEUTRAL = [name for name in backend_cases.CASES if name != "var_names_layer"]
TORCH_MISSING = "torch is not installed (its PyPI wheel pulls several GB of CUDA libraries): Keras 3 on PyTorch not run"


def mismatched(report):
    return {m.path: m.outcome for m in report.mismatches}


def run_cases_on(backend: str, *names: str) -> dict:
    """backend_cases' cases (all of CASES unless named) under KERAS_BACKEND=backend, in one fresh interpreter."""
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [sys.executable, str(TESTS / "backend_cases.py"), *names], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def on_tensorflow():
    return {name: backend_cases.run_case(name) for name in backend_cases.CASES}


@pytest.fixture(scope="module")
def on_jax():
    return run_cases_on("jax")


# ---- tf_keras (Keras 2) -----------------------------------------------------------------------


def test_tf_keras_adamw_var_names_search_the_full_name():
    """tf_keras searches ``var_names`` in ``LayerNorm/gamma:0``: the BERT list works, the
    lower-case ``layer_norm`` of transformers #4360 misses ``LayerNorm``."""
    report = verify(tf_keras_setups.adamw(["LayerNorm", "layer_norm", "bias"]), preset="no-bias-norm")
    assert report.ok, mismatched(report)
    assert report.backend == "tf_keras"
    kernel = next(m for m in report.measurements if m.path == "dense1/kernel")
    assert kernel.measured == "decoupled" and kernel.decoupled_ratio == pytest.approx(1.0, rel=1e-3)
    broken = verify(tf_keras_setups.adamw(["layer_norm", "bias"]), preset="no-bias-norm")
    assert mismatched(broken) == {
        "LayerNorm/gamma": Outcome.DECAYED_AGAINST_INTENT,
        "LayerNorm/beta": Outcome.DECAYED_AGAINST_INTENT,
    }


@pytest.mark.parametrize("name", ["AdamW", "Adam", "SGD", "Lion", "Adafactor", "experimental.AdamW"])
def test_tf_keras_new_style_optimizers_with_var_list_exclusions(name):
    owner = tf_keras.optimizers
    for part in name.split("."):
        owner = getattr(owner, part)
    built = tf_keras_setups.model()
    optimizer = owner(learning_rate=1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in built.trainable_variables if "bias" in v.name or "LayerNorm" in v.name]
    )
    built.compile(optimizer=optimizer, loss="mse")
    report = verify(built)
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    assert all(m.decoupled_steps for m in report.measurements if m.expected_decay)


def test_tf_keras_subclassed_model_batches_from_its_save_spec():
    optimizer = tf_keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias"])
    assert verify(tf_keras_setups.subclassed(optimizer)).ok
    report = verify(tf_keras_setups.subclassed(tf_keras.optimizers.AdamW(1e-2, weight_decay=0.1)))
    assert set(mismatched(report)) == {"two_dense/dense1/bias", "two_dense/dense2/bias"}


def test_tf_keras_adam_weight_decay_without_exclusions_is_flagged():
    assert verify(tf_keras_setups.adam_weight_decay_var_list()).ok
    report = verify(tf_keras_setups.adam_weight_decay_var_list(exclude=False))
    assert set(mismatched(report)) == {"dense1/bias", "LayerNorm/gamma", "LayerNorm/beta", "dense2/bias"}


def test_tf_keras_legacy_optimizer_with_regularizers_is_coupled_decay():
    report = verify(tf_keras_setups.compiled(tf_keras.optimizers.legacy.Adam(1e-2), regularized=True))
    assert report.ok, mismatched(report)
    assert {m.measured for m in report.measurements if m.path.endswith("kernel")} == {"coupled"}
    assert any("regularizer L2(l2=0.001)" in source for source in report.decay_sources)
    plain = verify(tf_keras_setups.compiled(tf_keras.optimizers.legacy.SGD(1e-2)))
    assert mismatched(plain) == {"dense1/kernel": Outcome.NOT_DECAYED, "dense2/kernel": Outcome.NOT_DECAYED}


def test_tf_keras_regularizer_plus_weight_decay_is_double_decay():
    optimizer = tf_keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias", "LayerNorm"])
    report = verify(tf_keras_setups.compiled(optimizer, regularized=True))
    assert mismatched(report) == {"dense1/kernel": Outcome.DOUBLE_DECAY, "dense2/kernel": Outcome.DOUBLE_DECAY}


@pytest.mark.parametrize("hf", [False, True], ids=["AdamW", "AdamWeightDecay"])
def test_tf_keras_mixed_precision_loss_scale_state_is_restored(hf):
    """compile() wraps the optimizer in a LossScaleOptimizer whose dynamic loss scale is not in
    its ``variables``: twins that start from different loss scales disagree on everything."""
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        if hf:
            from transformers.optimization_tf import AdamWeightDecay

            optimizer = AdamWeightDecay(1e-2, weight_decay_rate=0.1, exclude_from_weight_decay=["LayerNorm", "bias"])
        else:
            optimizer = tf_keras.optimizers.AdamW(1e-2, weight_decay=0.1)
            optimizer.exclude_from_weight_decay(var_names=["LayerNorm", "bias"])
        built = tf_keras_setups.compiled(optimizer)
        assert "LossScaleOptimizer" in type(built.optimizer).__name__
        report = verify(built, preset="no-bias-norm")
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]


def test_transformers_adam_weight_decay_exclude_and_include_regexes():
    """``AdamWeightDecay`` decays through ``_decay_weights_op``; its regexes are searched in
    ``var.name``, and ``include_in_weight_decay`` wins over ``exclude_from_weight_decay``."""
    good = verify(tf_keras_setups.hf_adam_weight_decay(["LayerNorm", "layer_norm", "bias"]), preset="no-bias-norm")
    assert good.ok, mismatched(good)
    assert good.optimizer == "AdamWeightDecay"
    kernel = next(m for m in good.measurements if m.path == "dense2/kernel")
    assert kernel.decoupled_ratio == pytest.approx(1.0, rel=1e-3)  # lr_t * weight_decay_rate * w
    broken = verify(tf_keras_setups.hf_adam_weight_decay(["layer_norm", "bias"]), preset="no-bias-norm")
    assert set(mismatched(broken)) == {"LayerNorm/gamma", "LayerNorm/beta"}
    included = verify(
        tf_keras_setups.hf_adam_weight_decay(["LayerNorm", "bias"], include=["dense1/bias"]), preset="no-bias-norm"
    )
    assert mismatched(included) == {"dense1/bias": Outcome.DECAYED_AGAINST_INTENT}


def test_transformers_adam_weight_decay_follows_a_schedule_with_dropout():
    """The per-step rate is the legacy optimizer's ``_decayed_lr`` (schedule at ``iterations``);
    dropout (tf_keras' stateful ``tf.nn.dropout`` by default) does not fake decay."""
    schedule = tf_keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=1, decay_rate=0.5)
    report = verify(
        tf_keras_setups.hf_adam_weight_decay(["LayerNorm", "bias"], learning_rate=schedule, dropout=True),
        preset="no-bias-norm",
        steps=3,
    )
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]


def test_tf_keras_hand_written_steps():
    """Keras 2's full names make ``"kernel" in v.name`` select the kernels; the Keras 3 habit
    ``v.name == "kernel"`` selects nothing on Keras 2."""
    report = verify(tf_keras_setups.hand_written(lambda name: "kernel" in name))
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    assert {m.measured for m in report.measurements if m.path.endswith("kernel")} == {"coupled"}
    broken = verify(tf_keras_setups.hand_written(lambda name: name == "kernel"))
    assert mismatched(broken) == {"dense1/kernel": Outcome.NOT_DECAYED, "dense2/kernel": Outcome.NOT_DECAYED}


def test_transformers_tf_bert_with_adam_weight_decay():
    """transformers 4.x TFBertForSequenceClassification, tiny and random, batches from its
    ``input_signature``: create_optimizer's exclude list passes under no-bias-norm; the
    lower-case list of transformers #4360 leaves every ``LayerNorm`` decayed."""
    good = verify(tf_keras_setups.tiny_bert_classifier(["LayerNorm", "layer_norm", "bias"]), preset="no-bias-norm")
    assert good.ok, [(m.path, m.detail) for m in good.mismatches]
    embeddings = [m for m in good.measurements if "embeddings/" in m.path and "LayerNorm" not in m.path]
    assert embeddings and all(m.measured == "decoupled" for m in embeddings)
    broken = verify(tf_keras_setups.tiny_bert_classifier(["layer_norm", "bias"]), preset="no-bias-norm")
    wrong = {path.split("/", 1)[1] for path in mismatched(broken)}
    assert wrong == {
        "bert/embeddings/LayerNorm/gamma",
        "bert/embeddings/LayerNorm/beta",
        "bert/encoder/layer_._0/attention/output/LayerNorm/gamma",
        "bert/encoder/layer_._0/attention/output/LayerNorm/beta",
        "bert/encoder/layer_._0/output/LayerNorm/gamma",
        "bert/encoder/layer_._0/output/LayerNorm/beta",
    }


def test_transformers_models_computing_their_own_loss_with_create_optimizer():
    """The Hugging Face pattern: ``create_optimizer`` (warm-up schedule, AdamWeightDecay with
    its exclude list) and ``compile()`` without a loss, labels moved into the inputs."""
    from transformers import TFBertForMaskedLM, create_optimizer

    config = tf_keras_setups.tiny_bert_config()
    bert = TFBertForMaskedLM(config)
    bert(bert.dummy_inputs)
    optimizer, _ = create_optimizer(init_lr=5e-5, num_train_steps=100, num_warmup_steps=10, weight_decay_rate=0.01)
    bert.compile(optimizer=optimizer)
    report = verify(bert, preset="no-bias-norm")
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    assert report.decay_sources == ("AdamWeightDecay weight_decay_rate=0.01",)


def test_cli_tf_keras_setup_reports_its_backend(tmp_path):
    """tf_keras AdamW through the CLI: used to crash on ``scale_loss`` (exit 1)."""
    setup = tmp_path / "train_k2.py"
    setup.write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nimport tf_keras_setups\n"
        "def make():\n    return tf_keras_setups.adamw(['layer_norm', 'bias'])\n"
    )
    result = run_cli("verify", "--setup", f"{setup}:make", "--preset", "no-bias-norm", "--format", "json")
    assert result.returncode == 1, result.stderr
    document = json.loads(result.stdout)["result"]
    assert document["backend"] == "tf_keras"
    assert {m["path"] for m in document["variables"] if m["outcome"] != "ok"} == {
        "LayerNorm/gamma",
        "LayerNorm/beta",
    }


# ---- Keras 3: the same set-ups on TensorFlow and JAX --------------------------------------------


def test_jax_runs_through_its_own_backend(on_jax):
    assert {case["backend"] for case in on_jax.values()} == {"jax"}
    assert on_jax["var_list_adamw"]["ok"]
    assert {path for path, outcome in on_jax["no_exclusions_adamw"]["outcomes"].items() if outcome != "ok"} == {
        "dense1/bias",
        "layer_norm/gamma",
        "layer_norm/beta",
        "dense2/bias",
    }


@pytest.mark.parametrize("name", NEUTRAL)
def test_same_verdicts_on_tensorflow_and_jax(name, on_tensorflow, on_jax):
    assert on_tensorflow[name]["backend"] == "tensorflow"
    assert on_jax[name]["outcomes"] == on_tensorflow[name]["outcomes"]
    assert on_jax[name]["measured"] == on_tensorflow[name]["measured"]
    if name != "mixed_precision_inner_exclusions":  # a LossScaleOptimizer skips an update (decay included)
        # when float16 gradients overflow, which the two backends' float16 kernels reach on different steps
        assert on_jax[name]["decoupled_steps"] == on_tensorflow[name]["decoupled_steps"]


def test_gradient_accumulation_on_jax(on_jax):
    case = on_jax["accumulating_lion"]
    assert case["ok"] and case["steps"] == 4
    assert case["decoupled_steps"]["dense1/kernel"] == 2  # only the updating steps decay


def test_var_names_naming_a_layer_differ_between_tensorflow_and_jax(on_tensorflow, on_jax):
    """shared FACTS: TensorFlow searches ``layer_norm/gamma:0``, JAX the leaf ``gamma``."""
    assert on_tensorflow["var_names_layer"]["ok"]
    wrong = {path for path, outcome in on_jax["var_names_layer"]["outcomes"].items() if outcome != "ok"}
    assert wrong == {"layer_norm/gamma", "layer_norm/beta"}


@pytest.mark.slow
def test_keras_hub_task_on_jax_keeps_embeddings_decayed():
    """The keras-io fine-tuning pattern, on JAX: ``var_names=["bias", "gamma", "beta"]`` leaves the three
    embedding tables decayed (flagged under kernels-only), at a fine-tuning rate (lr*wd = 5e-7)."""
    result = run_cases_on("jax", "keras_hub_bert_keras_io")["keras_hub_bert_keras_io"]
    assert result["backend"] == "jax"
    wrong = {path for path, outcome in result["outcomes"].items() if outcome != "ok"}
    assert wrong == {"token_embedding/embeddings", "position_embedding/embeddings", "segment_embedding/embeddings"}
    assert {result["outcomes"][path] for path in wrong} == {"decayed-against-intent"}
    assert result["measured"]["token_embedding/embeddings"] == "decoupled"


def test_cli_backend_option_and_keras_backend_variable(tmp_path):
    setup = tmp_path / "train_k3.py"
    setup.write_text(
        f"import sys\nsys.path.insert(0, {str(TESTS)!r})\nimport backend_cases\n"
        "def make():\n    return backend_cases.var_names_layer()\n"
    )
    on_jax = run_cli("verify", "--setup", f"{setup}:make", "--preset", "no-bias-norm", "--backend", "jax")
    assert on_jax.returncode == 1, on_jax.stderr
    assert "backend jax" in on_jax.stdout.splitlines()[0]
    assert "layer_norm/gamma" in on_jax.stdout and on_jax.stderr.strip() == ""


def test_cli_refuses_a_backend_that_is_not_installed(tmp_path):
    # torch is in the test extra: a sitecustomize hides it from the CLI's interpreter, so this runs everywhere
    (tmp_path / "sitecustomize.py").write_text(
        "import sys, importlib.util as u\n"
        "_find = u.find_spec\n"
        "u.find_spec = lambda name, *a, **k: None if name.split('.')[0] == 'torch' else _find(name, *a, **k)\n"
        "sys.modules['torch'] = None\n"
    )
    hidden = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    result = run_cli("verify", "--setup", "nowhere.py:make", "--backend", "torch", env=hidden)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "decay-audit: error: --backend: torch is not installed: cannot probe on it (pip install torch)"
    ]
    unknown = run_cli("verify", "--setup", "nowhere.py:make", "--backend", "mxnet")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason=TORCH_MISSING)
def test_same_verdicts_on_tensorflow_and_torch(on_tensorflow):
    on_torch = run_cases_on("torch")
    assert {case["backend"] for case in on_torch.values()} == {"torch"}
    for name in NEUTRAL:
        assert on_torch[name]["outcomes"] == on_tensorflow[name]["outcomes"], name
    wrong = {path for path, outcome in on_torch["var_names_layer"]["outcomes"].items() if outcome != "ok"}
    assert wrong == {"layer_norm/gamma", "layer_norm/beta"}  # leaf names, as on JAX


# ---- GPU ------------------------------------------------------------------------------------------


@pytest.mark.gpu
def test_gpu_probe_is_deterministic_and_right():
    """On a GPU: op determinism on, the noise floor calibrated by a repeated step, and the
    same verdicts as on the CPU for a correct and a broken set-up (dropout included)."""
    good = verify(backend_cases.dropout_adamw(), preset="no-bias-norm", device="gpu")
    assert good.device == "GPU" and good.ok, [(m.path, m.detail) for m in good.mismatches]
    broken = verify(backend_cases.no_exclusions_adamw(), preset="no-bias-norm", device="gpu")
    assert set(mismatched(broken)) == {"dense1/bias", "layer_norm/gamma", "layer_norm/beta", "dense2/bias"}
    fine = verify(backend_cases.fine_tuning_rate_adamw(), preset="no-bias-norm", device="gpu")
    assert set(mismatched(fine)) == {"dense1/bias", "layer_norm/gamma", "layer_norm/beta", "dense2/bias"}


@pytest.mark.gpu
def test_gpu_tf_keras_bert():
    report = verify(
        tf_keras_setups.tiny_bert_classifier(["LayerNorm", "layer_norm", "bias"]), preset="no-bias-norm", device="gpu"
    )
    assert report.device == "GPU" and report.ok, [(m.path, m.detail) for m in report.mismatches]
