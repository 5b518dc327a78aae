"""verify on the set-ups people train.

keras_hub task models with dict inputs, custom loops with sparse labels, a set-up's own
batches, crashes that must never read as findings, and intent rules that match nothing.
Every model is built in code, tiny (1 layer, hidden 8, vocabulary 50, sequence 8), with
random weights; nothing is downloaded.
"""

from __future__ import annotations

import json
import textwrap
from xml.etree import ElementTree

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from conftest import run_cli

from decay_audit.cli import main
from decay_audit.errors import DecayAuditError
from decay_audit.policy import build_policy
from decay_audit.probe.data import BatchSource, input_structure
from decay_audit.probe.setup import SetupError, Stage, TrainingSetup, describe_exception, load_setup
from decay_audit.stages.verify import verify

VOCABULARY, HIDDEN, SEQUENCE = 50, 8, 8


def bert_backbone():
    return keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=1,
        num_heads=2,
        hidden_dim=HIDDEN,
        intermediate_dim=16,
        max_sequence_length=SEQUENCE,
        num_segments=2,
    )


def bert():
    return keras_hub.models.BertTextClassifier(backbone=bert_backbone(), num_classes=3, preprocessor=None)


def albert():
    backbone = keras_hub.models.AlbertBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=1,
        num_heads=2,
        hidden_dim=HIDDEN,
        embedding_dim=HIDDEN,
        intermediate_dim=16,
        max_sequence_length=SEQUENCE,
    )
    return keras_hub.models.AlbertTextClassifier(backbone=backbone, num_classes=3, preprocessor=None)


def gpt2():
    backbone = keras_hub.models.GPT2Backbone(
        vocabulary_size=VOCABULARY,
        num_layers=1,
        num_heads=2,
        hidden_dim=HIDDEN,
        intermediate_dim=16,
        max_sequence_length=SEQUENCE,
    )
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def gemma():
    backbone = keras_hub.models.GemmaBackbone(
        vocabulary_size=VOCABULARY,
        num_layers=1,
        num_query_heads=2,
        num_key_value_heads=1,
        hidden_dim=HIDDEN,
        intermediate_dim=16,
        head_dim=4,
    )
    return keras_hub.models.GemmaCausalLM(backbone=backbone, preprocessor=None)


TASKS = {"BertTextClassifier": bert, "AlbertTextClassifier": albert, "GPT2CausalLM": gpt2, "GemmaCausalLM": gemma}
KERAS_IO_PATTERN = ["bias", "gamma", "beta"]  # keras-io fine-tuning guides' exclude_from_weight_decay(var_names=...)


def adamw(var_names=None):
    optimizer = keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=0.1)
    if var_names:
        optimizer.exclude_from_weight_decay(var_names=var_names)
    return optimizer


def wrong(report):
    return {m.path for m in report.mismatches}


# -- keras_hub task models -------------------------------------------------------------------------


def test_bert_batch_follows_the_dict_inputs_with_ids_per_table_and_masks_of_ones():
    model = bert()
    structure = input_structure(model)
    assert set(structure) == {"token_ids", "segment_ids", "padding_mask"}
    assert structure["token_ids"].vocabulary == VOCABULARY and structure["segment_ids"].vocabulary == 2
    assert structure["padding_mask"].vocabulary is None  # reaches no table: a mask
    x, y = BatchSource(TrainingSetup(model, None), batch_size=4).next()
    assert isinstance(x, dict) and x["token_ids"].shape == (4, SEQUENCE)
    assert x["segment_ids"].max() < 2 and x["token_ids"].max() >= 2  # each input gets its own table's range
    assert x["token_ids"].max() < VOCABULARY and np.all(x["padding_mask"] == 1)
    assert y.shape == (4,) and y.dtype.kind == "i" and y.max() < 3  # sparse labels for the compiled sparse loss


@pytest.mark.parametrize("task", TASKS)
def test_keras_hub_task_with_exclusions_for_its_biases_and_norms_passes_no_bias_norm(task):
    model = TASKS[task]()
    model.compile(optimizer=adamw(KERAS_IO_PATTERN + ["scale"]))  # Gemma's RMS norms hold 'scale'
    report = verify(model, preset="no-bias-norm")
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    assert any(m.path.endswith("embeddings") and m.decoupled_steps for m in report.measurements)


@pytest.mark.parametrize("task", TASKS)
def test_keras_io_pattern_on_keras_hub_task_leaves_embeddings_decayed_under_kernels_only(task):
    model = TASKS[task]()
    model.compile(optimizer=adamw(KERAS_IO_PATTERN))
    report = verify(model, preset="kernels-only")
    paths = {m.path for m in report.measurements}
    # What the pattern misses: every embedding table, and Gemma's RMS-norm 'scale' (not gamma/beta).
    expected = {p for p in paths if p.endswith("/embeddings") or p.endswith("/scale")}
    assert expected and wrong(report) == expected
    assert {m.intent for m in report.mismatches if m.path.endswith("embeddings")} == {
        "embedding is excluded under kernels-only"
    }


BERT_SETUP = """
import keras, keras_hub

def make():
    backbone = keras_hub.models.BertBackbone(vocabulary_size=50, num_layers=1, num_heads=2, hidden_dim=8,
                                             intermediate_dim=16, max_sequence_length=8, num_segments=2)
    optimizer = keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return backbone, optimizer
"""


def test_cli_keras_io_pattern_on_bert_backbone_fails_kernels_only_and_passes_no_bias_norm(tmp_path):
    setup = tmp_path / "bert_setup.py"
    setup.write_text(BERT_SETUP)
    runner = CliRunner()
    strict = runner.invoke(main, ["verify", "--setup", f"{setup}:make", "--preset", "kernels-only", "--format", "json"])
    assert strict.exit_code == 1, strict.output
    document = json.loads(strict.stdout)["result"]
    assert {m["path"] for m in document["variables"] if m["outcome"] != "ok"} == {
        "token_embedding/embeddings",
        "position_embedding/embeddings",
        "segment_embedding/embeddings",
    }
    loose = runner.invoke(main, ["verify", "--setup", f"{setup}:make", "--preset", "no-bias-norm"])
    assert loose.exit_code == 0, loose.output
    assert "all variables get the intended decay" in loose.stdout


# -- custom loops with sparse labels, and the set-up's own batches --------------------------------------


def classifier():
    inputs = keras.Input((6,))
    return keras.Model(inputs, keras.layers.Dense(5, name="out")(keras.layers.Dense(8, name="hidden")(inputs)))


def custom_loop(loss, exclude=True, **extra):
    model = classifier()  # never compiled: model.loss is None
    optimizer = adamw(["bias"] if exclude else None)

    @tf.function
    def train_step(model, optimizer, x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        gradients = tape.gradient(value, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    return {"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": loss, **extra}


SPARSE_LOSSES = {
    "keras-object": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    "tf-nn-lambda": lambda y, p: tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=p)
    ),
}


@pytest.mark.parametrize("loss", SPARSE_LOSSES)
def test_custom_loop_with_sparse_labels_passes_and_a_missing_exclusion_is_flagged(loss):
    assert verify(custom_loop(SPARSE_LOSSES[loss])).ok
    assert wrong(verify(custom_loop(SPARSE_LOSSES[loss], exclude=False))) == {"hidden/bias", "out/bias"}


def test_targets_fit_the_loss_kind():
    model = classifier()
    real = BatchSource(TrainingSetup(model, None, data_loss=keras.losses.MeanSquaredError())).next()[1]
    probabilities = BatchSource(TrainingSetup(model, None, data_loss=keras.losses.CategoricalCrossentropy())).next()[1]
    sparse = BatchSource(TrainingSetup(model, None, data_loss=SPARSE_LOSSES["tf-nn-lambda"])).next()[1]
    assert real.shape == (4, 5) and real.min() < 0
    assert probabilities.shape == (4, 5) and 0 <= probabilities.min() and probabilities.max() <= 1
    assert sparse.shape == (4,) and sparse.dtype.kind == "i" and sparse.max() < 5


def test_compiled_loss_dict_keyed_by_output_name():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="hidden")(inputs)
    model = keras.Model(inputs, [keras.layers.Dense(5, name="cls")(hidden), keras.layers.Dense(2, name="reg")(hidden)])
    model.compile(
        optimizer=adamw(["bias"]),
        loss={"reg": "mse", "cls": keras.losses.SparseCategoricalCrossentropy(from_logits=True)},
    )
    x, y = BatchSource(TrainingSetup(model, model.optimizer)).next()
    assert y[0].shape == (4,) and y[0].dtype.kind == "i" and y[1].shape == (4, 2) and y[1].dtype.kind == "f"
    assert verify(model).ok


def test_setup_hands_its_own_batch_and_dataset():
    features = np.random.default_rng(1).normal(size=(8, 6)).astype("float32")
    labels = np.arange(8) % 5
    loss = SPARSE_LOSSES["keras-object"]
    report = verify(custom_loop(loss, batch=(features[:4], labels[:4])))
    assert report.ok and any("own" in note for note in report.notes)
    dataset = tf.data.Dataset.from_tensor_slices((features, labels)).batch(4)  # 2 batches, read again for 4 steps
    assert verify(custom_loop(loss, dataset=dataset), steps=4).ok
    assert wrong(verify(custom_loop(loss, exclude=False, dataset=dataset))) == {"hidden/bias", "out/bias"}


def test_keras_hub_task_with_its_own_dict_batch():
    model = bert()
    model.compile(optimizer=adamw(KERAS_IO_PATTERN))
    ids = np.random.default_rng(2).integers(0, VOCABULARY, size=(2, 5))
    x = {"token_ids": ids, "segment_ids": np.zeros_like(ids), "padding_mask": np.ones_like(ids)}
    report = verify({"model": model, "batch": (x, np.array([0, 2]))}, preset="no-bias-norm")
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]


def test_keras_hub_task_with_a_preprocessor_fed_raw_text_as_in_the_fine_tuning_guides():
    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(VOCABULARY - 5)]
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        keras_hub.models.BertTokenizer(vocabulary=vocabulary), sequence_length=SEQUENCE
    )
    model = keras_hub.models.BertTextClassifier(backbone=bert_backbone(), num_classes=2, preprocessor=preprocessor)
    model.compile(optimizer=adamw(KERAS_IO_PATTERN))
    texts, labels = np.array(["w1 w2 w3", "w4 w5", "w6 w7 w8 w9", "w1"]), np.array([0, 1, 0, 1])
    dataset = tf.data.Dataset.from_tensor_slices((texts, labels)).batch(2)  # what Task.fit is given
    report = verify({"model": model, "dataset": dataset}, preset="kernels-only")
    assert wrong(report) == {
        "token_embedding/embeddings",
        "position_embedding/embeddings",
        "segment_embedding/embeddings",
    }


def test_subclassed_model_never_called_is_built_from_the_setups_batch():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(4, name="hidden")
            self.out = keras.layers.Dense(2, name="out")

        def call(self, x):
            return self.out(self.hidden(x))

    features = np.ones((4, 3), "float32")
    report = verify({"model": Net(), "optimizer": adamw(["bias"]), "batch": features})
    assert report.ok and len(report.measurements) == 4
    with pytest.raises(SetupError) as caught:
        verify({"model": Net(), "optimizer": adamw(["bias"])})
    assert caught.value.stage is Stage.BATCH and "hand a batch" in str(caught.value)


def test_nested_functional_inputs_get_their_own_tables():
    ids, mask = keras.Input((None,), dtype="int32", name="ids"), keras.Input((None,), dtype="int32", name="mask")
    tags = keras.Input((None,), dtype="int32", name="tags")
    inner_ids, inner_tags = keras.Input((None,), dtype="int32"), keras.Input((None,), dtype="int32")
    embedded = keras.layers.Add()(
        [
            keras.layers.Embedding(50, 4, name="words")(inner_ids),
            keras.layers.Embedding(3, 4, name="tag_table")(inner_tags),
        ]
    )
    encoder = keras.Model({"a": inner_ids, "b": inner_tags}, embedded, name="encoder")
    hidden = encoder({"a": ids, "b": tags})
    masked = hidden * keras.ops.expand_dims(keras.ops.cast(mask, "float32"), -1)
    model = keras.Model([ids, tags, mask], keras.layers.Dense(2, name="head")(masked))
    x, _ = BatchSource(TrainingSetup(model, None), batch_size=4).next()
    assert isinstance(x, list) and len(x) == 3
    assert 3 <= x[0].max() < 50 and x[1].max() < 3 and np.all(x[2] == 1)


# -- a crash never looks like a finding -------------------------------------------------------------


STAGE_FILES = {
    Stage.IMPORT: "import fancy_missing_library_for_decay_audit_tests\n",
    Stage.MAKE: "def make():\n    raise ZeroDivisionError('bad config')\n",
}


def write_setup(tmp_path, body, name="train.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def test_import_and_make_failures_name_their_stage(tmp_path):
    for stage, body in STAGE_FILES.items():
        path = write_setup(tmp_path, body, f"{stage.name.lower()}.py")
        with pytest.raises(SetupError) as caught:
            load_setup(f"{path}:make")
        assert caught.value.stage is stage and isinstance(caught.value, DecayAuditError)
        assert f"{stage.value} failed" in str(caught.value)
    assert "ModuleNotFoundError" in str(pytest.raises(SetupError, load_setup, f"{tmp_path / 'import.py'}:make").value)
    path = write_setup(tmp_path, "def make():\n    return 42\n", "wrong.py")
    with pytest.raises(SetupError, match=r"make\(\) failed: make\(\) must return .*got int") as caught:
        load_setup(f"{path}:make")
    assert caught.value.stage is Stage.MAKE


def test_batch_step_and_measurement_failures_name_their_stage(monkeypatch):
    def rejects_everything(y_true, y_pred):
        raise ValueError("this loss accepts no target")

    with pytest.raises(SetupError) as caught:
        verify(custom_loop(rejects_everything))
    assert caught.value.stage is Stage.BATCH and "no synthetic target fits" in str(caught.value)

    broken = custom_loop(SPARSE_LOSSES["keras-object"])

    @tf.function
    def train_step(model, optimizer, x, y):
        raise RuntimeError("my step is broken")

    broken["train_step"] = train_step
    with pytest.raises(SetupError, match="step failed: RuntimeError: my step is broken") as caught:
        verify(broken)
    assert caught.value.stage is Stage.STEP and isinstance(caught.value.__cause__, Exception)

    import decay_audit.stages.verify as verification

    def explode(*args, **kwargs):
        raise FloatingPointError("comparison blew up")

    monkeypatch.setattr(verification, "judge", explode)
    with pytest.raises(SetupError, match="measurement failed: FloatingPointError") as caught:
        verify(custom_loop(SPARSE_LOSSES["keras-object"]))
    assert caught.value.stage is Stage.MEASUREMENT


def test_generator_that_runs_out_is_a_batch_error():
    def two_batches():
        for _ in range(2):
            yield np.ones((4, 6), "float32"), np.arange(4)

    with pytest.raises(SetupError, match="batch failed: .*one batch per probe step"):
        verify(custom_loop(SPARSE_LOSSES["keras-object"], dataset=two_batches()), steps=3)


def test_describe_exception_keeps_the_telling_line_of_tensorflow_errors():
    message = (
        "Graph execution error:\n\nDetected at node foo defined at (most recent call last):\n"
        '  File "x.py", line 3\n\x1b[1m{{function_node __wrapped__GatherV2}} indices[0,0] = 60 is not in '
        "[0, 50) [Op:GatherV2]\x1b[0m"
    )
    assert describe_exception(tf.errors.InvalidArgumentError(None, None, message)) == (
        "InvalidArgumentError: indices[0,0] = 60 is not in [0, 50) [Op:GatherV2]"
    )
    autograph = "in user code:\n\n    File \"t.py\", line 4, in step  *\n        raise X\n\n    KeyError: 'token_ids'\n"
    assert describe_exception(ValueError(autograph)) == "KeyError: 'token_ids'"


STEP_FAILS = """
import keras, tensorflow as tf

def make():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))

    @tf.function
    def train_step(model, optimizer, x, y):
        raise RuntimeError("my step is broken")

    return {"model": model, "optimizer": keras.optimizers.AdamW(1e-2, weight_decay=0.1), "train_step": train_step}
"""


def test_cli_unprobeable_setup_exits_2_with_one_line_and_debug_shows_the_traceback(tmp_path):
    path = write_setup(tmp_path, STEP_FAILS)
    runner = CliRunner()
    result = runner.invoke(main, ["verify", "--setup", f"{path}:make", "--junit", str(tmp_path / "out.xml")])
    assert result.exit_code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "step failed: RuntimeError: my step is broken" in lines[0] and "--debug" in lines[0]
    assert not (tmp_path / "out.xml").exists()
    debug = runner.invoke(main, ["verify", "--setup", f"{path}:make", "--debug"])
    assert debug.exit_code == 2 and "Traceback" in debug.stderr and "my step is broken" in debug.stderr


def test_cli_import_failure_in_a_fresh_process_is_one_line_exit_2(tmp_path):
    path = write_setup(tmp_path, "import keras\nraise KeyError('missing config entry')\n")
    result = run_cli("verify", "--setup", f"{path}:make")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        f"decay-audit: error: {path}: import failed: KeyError: 'missing config entry' (--debug shows the traceback)"
    ]


# -- intent that matches nothing -----------------------------------------------------------------------


def compiled_classifier(exclude=True):
    model = classifier()
    model.compile(optimizer=adamw(["bias"] if exclude else None), loss="mse")
    return model


def test_dead_expectations_and_overrides_are_reported():
    report = verify(
        compiled_classifier(),
        ordered_expectations=[(False, "*/bias"), (False, "encoder/*")],
        preset=build_policy("kernels-only", no_decay=["*/no_such_layer/*"]),
    )
    assert report.ok
    assert report.dead_selectors == ("--no-decay */no_such_layer/*", "--expect-no-decay encoder/*")
    assert {m.intent for m in report.measurements if m.path.endswith("bias")} == {"--expect-no-decay */bias"}


def test_cli_dead_selector_warns_strict_fails_and_table_names_the_rule(tmp_path):
    setup = write_setup(
        tmp_path,
        """
        import keras

        def make():
            inputs = keras.Input((6,))
            model = keras.Model(inputs, keras.layers.Dense(5, name="out")(keras.layers.Dense(8, name="hidden")(inputs)))
            optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
            optimizer.exclude_from_weight_decay(var_names=["bias"])
            model.compile(optimizer=optimizer, loss="mse")
            return model
        """,
    )
    runner = CliRunner()
    base = ["verify", "--setup", f"{setup}:make", "--expect-no-decay", "*/nothing/*"]
    loose = runner.invoke(main, base + ["--junit", str(tmp_path / "decay.xml")])
    assert loose.exit_code == 0, loose.output
    assert "warning: --expect-no-decay */nothing/* matches no variable" in loose.stdout
    skipped = [case for case in ElementTree.parse(tmp_path / "decay.xml").getroot() if case.find("skipped") is not None]
    assert [case.get("name") for case in skipped] == ["--expect-no-decay */nothing/*"]
    strict = runner.invoke(main, base + ["--strict"])
    assert strict.exit_code == 1 and "match no variable" in strict.stderr
    dead_override = runner.invoke(
        main, ["verify", "--setup", f"{setup}:make", "--no-decay", "kind:embedding", "--strict"]
    )
    assert dead_override.exit_code == 1 and "--no-decay kind:embedding" in dead_override.stderr
    mismatch = runner.invoke(main, ["verify", "--setup", f"{setup}:make", "--expect-no-decay", "hidden/*"])
    assert mismatch.exit_code == 1
    row = next(line for line in mismatch.stdout.splitlines() if line.startswith("hidden/kernel"))
    assert "--expect-no-decay hidden/*" in row and "decayed-against-intent" in row
    kernel = next(line for line in mismatch.stdout.splitlines() if line.startswith("out/kernel"))
    assert "kernel under kernels-only" in kernel


def test_assert_decay_strict_fails_on_dead_rules_and_crashes_are_setup_errors():
    import decay_audit
    from decay_audit.testing import assert_decay

    model = compiled_classifier()
    assert assert_decay(model, ordered_expectations=[(False, "*/typo_layer/*")]).dead_selectors
    with pytest.raises(AssertionError, match="match no variable: --expect-no-decay \\*/typo_layer/\\*"):
        assert_decay(model, strict=True, ordered_expectations=[(False, "*/typo_layer/*")])
    assert decay_audit.SetupError is SetupError
    with pytest.raises(decay_audit.SetupError):
        assert_decay({"model": classifier(), "optimizer": adamw(), "batch": np.ones((4, 7), "float32")})


def test_tf_keras_functional_inputs_are_read_the_same_way():
    import tf_keras

    ids = tf_keras.Input((None,), dtype="int32", name="ids")
    mask = tf_keras.Input((None,), dtype="int32", name="mask")
    hidden = tf_keras.layers.Embedding(40, 4)(ids) * tf_keras.backend.cast(mask, "float32")[..., None]
    model = tf_keras.Model(
        {"ids": ids, "mask": mask}, tf_keras.layers.Dense(2)(tf_keras.layers.GlobalAveragePooling1D()(hidden))
    )
    model.compile(optimizer="adam", loss="mse")
    x, y = BatchSource(TrainingSetup(model, None)).next()
    assert set(x) == {"ids", "mask"} and x["ids"].max() < 40 and np.all(x["mask"] == 1)
    assert y.shape == (4, 2) and y.dtype.kind == "f"


def test_tables_inside_a_subclassed_layer_bound_its_ids_and_positional_tables_bound_the_length():
    ids = keras.Input((None,), dtype="int32")
    embedded = keras_hub.layers.TokenAndPositionEmbedding(VOCABULARY, sequence_length=6, embedding_dim=4)(ids)
    model = keras.Model(ids, keras.layers.Dense(2)(embedded))
    assert input_structure(model).vocabulary == VOCABULARY  # the Embedding is a sublayer, not a graph node
    x, _ = BatchSource(TrainingSetup(model, None)).next()
    assert x.shape == (4, 6) and x.max() < VOCABULARY
