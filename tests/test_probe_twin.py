"""The twin-step probe on the set-ups where telling decay apart from the rest of a step is hardest.

Fine-tuning learning rates, every decay knob of every keras optimizer, several
optimizers in one step, numerical noise on a gradient-starved bias, and how coupled
magnitudes are reported.
"""

from __future__ import annotations

import inspect

import builders
import keras
import numpy as np
import pytest
import tensorflow as tf
import verify_setups

from decay_audit.findings import Outcome
from decay_audit.probe.backends import BACKENDS, backend_for, load_backend
from decay_audit.probe.backends._keras3 import COUPLED_KNOBS, DECOUPLED_KNOBS, NOT_DECAY
from decay_audit.probe.setup import setup_from_object
from decay_audit.stages.verify import verify


def outcomes(report):
    return {m.path: m.outcome for m in report.measurements}


def by_path(report, path):
    return next(m for m in report.measurements if m.path == path)


# ---- fine-tuning rates ----------------------------------------------------------------


@pytest.mark.parametrize("lr, wd", [(5e-5, 0.01), (1e-5, 1e-4)])
def test_fine_tuning_rates_leaking_bias_is_caught_and_correct_passes(lr, wd):
    leaking = verify(verify_setups.compiled(keras.optimizers.AdamW(lr, weight_decay=wd), exclude=False))
    assert {m.path for m in leaking.mismatches} == {"dense1/bias", "dense2/bias"}
    assert outcomes(leaking)["dense1/bias"] is Outcome.DECAYED_AGAINST_INTENT
    correct = verify(verify_setups.compiled(keras.optimizers.AdamW(lr, weight_decay=wd)))
    assert correct.ok, [(m.path, m.detail) for m in correct.mismatches]
    kernel = by_path(correct, "dense1/kernel")
    # the real per-step magnitude is reported, measured through an amplified twin
    assert kernel.decoupled_rate == pytest.approx(lr * wd, rel=1e-6)
    assert kernel.amplified and kernel.amplified > 1.0
    assert kernel.decoupled_ratio == pytest.approx(1.0, rel=1e-2)
    assert f"{lr * wd:.3g}" in kernel.detail


def test_rate_mismatch_still_seen_at_fine_tuning_rates():
    """A hand-written step that decays twice through one optimizer (apply twice) is not 1x lr*wd."""
    model = builders.seed_model()
    optimizer = keras.optimizers.SGD(1e-5, weight_decay=1e-4)
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name == "bias"])
    loss = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(model, optimizer, x, y):
        for _ in range(2):
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))

    report = verify({"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": loss})
    kernel = by_path(report, "dense1/kernel")
    assert kernel.outcome is Outcome.RATE_MISMATCH and kernel.decoupled_ratio == pytest.approx(2.0, rel=1e-2)


# ---- every decay knob of every optimizer -----------------------------------------------


def test_every_keras_optimizer_argument_naming_decay_is_known():
    """A new Keras optimizer knob turns this red instead of silently staying on in the reference."""
    for name in dir(keras.optimizers):
        cls = getattr(keras.optimizers, name)
        if not (isinstance(cls, type) and issubclass(cls, keras.optimizers.Optimizer)):
            continue
        for parameter in inspect.signature(cls.__init__).parameters:
            if "decay" in parameter or "regulariz" in parameter:
                assert parameter in DECOUPLED_KNOBS + COUPLED_KNOBS + NOT_DECAY, (name, parameter)


def _knobs(optimizer):
    setup = setup_from_object(verify_setups.compiled(optimizer), "t")
    backend = backend_for(setup)
    with backend.switchable(setup) as sources:
        return {(s.kind.value, s.knob) for s in sources}


def test_muon_adam_weight_decay_on_biases_is_caught():
    broken = verify(
        verify_setups.compiled(keras.optimizers.Muon(1e-2, weight_decay=0.1, adam_weight_decay=0.1), exclude=False)
    )
    assert {m.path for m in broken.mismatches} == {"dense1/bias", "dense2/bias"}
    assert "adam_weight_decay=0.1" in by_path(broken, "dense1/bias").detail
    # weight_decay=0 on Muon's matrices is not the knob that decays biases
    only_adam = verify(
        verify_setups.compiled(keras.optimizers.Muon(1e-2, weight_decay=None, adam_weight_decay=0.1), exclude=False)
    )
    assert outcomes(only_adam)["dense1/bias"] is Outcome.DECAYED_AGAINST_INTENT
    correct = verify(verify_setups.compiled(keras.optimizers.Muon(1e-2, weight_decay=0.1, adam_weight_decay=0.1)))
    assert correct.ok, [(m.path, m.detail) for m in correct.mismatches]


@pytest.mark.parametrize(
    "knob", ["l2_regularization_strength", "l2_shrinkage_regularization_strength", "l1_regularization_strength"]
)
def test_ftrl_regularization_strengths_are_switched_and_attributed(knob):
    optimizer = keras.optimizers.Ftrl(0.05, **{knob: 0.05})
    kind = "l1" if knob.startswith("l1") else "coupled"  # L1 is sparsity: its own kind, reported apart
    assert (kind, knob) in _knobs(keras.optimizers.Ftrl(0.05, **{knob: 0.05}))
    report = verify(verify_setups.compiled(optimizer))
    bias = by_path(report, "dense1/bias")
    assert knob in bias.detail  # Ftrl's penalty ignores exclusions
    if kind == "l1":
        assert bias.outcome is Outcome.OK and bias.l1 == "yes", bias.detail
    else:
        assert bias.outcome is Outcome.DECAYED_AGAINST_INTENT, bias.detail


@pytest.mark.parametrize("name", ["Muon", "ScheduleFreeAdamW"])
def test_newer_optimizers_with_exclusions_pass_and_without_are_flagged(name):
    good = verify(verify_setups.compiled(getattr(keras.optimizers, name)(learning_rate=0.05, weight_decay=0.1)))
    assert good.ok, [(m.path, m.detail) for m in good.mismatches]
    assert all(m.decoupled_steps for m in good.measurements if m.expected_decay)
    if name == "Muon":
        return  # Muon's biases go to adam_weight_decay: covered above
    bad = verify(
        verify_setups.compiled(getattr(keras.optimizers, name)(learning_rate=0.05, weight_decay=0.1), exclude=False)
    )
    assert {m.path for m in bad.mismatches} == {"dense1/bias", "dense2/bias"}


def test_knob_table_covers_every_optimizer_with_a_decay_parameter():
    classes = {name: getattr(keras.optimizers, name) for name in dir(keras.optimizers)}
    with_decay = sorted(
        name
        for name, cls in classes.items()
        if isinstance(cls, type)
        and issubclass(cls, keras.optimizers.Optimizer)
        and "weight_decay" in inspect.signature(cls.__init__).parameters
    )
    assert len(with_decay) >= 14
    for name in with_decay:
        if name in ("LossScaleOptimizer", "MultiOptimizer", "Optimizer"):
            continue
        optimizer = classes[name](learning_rate=0.01, weight_decay=0.1)
        assert ("decoupled", "weight_decay") in _knobs(optimizer), name


# ---- several optimizers --------------------------------------------------------------


def _backbone_head():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(8, name="backbone")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="head")(hidden))
    backbone = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    backbone.exclude_from_weight_decay(var_names=["bias"])
    head = keras.optimizers.AdamW(1e-3, weight_decay=0.05)  # no exclusions: the head's bias decays too
    return model, backbone, head


def test_two_optimizers_in_a_custom_step_decay_each_head_variable_once():
    model, backbone, head = _backbone_head()
    loss = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(model, optimizer, x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        variables = model.trainable_variables
        gradients = tape.gradient(value, variables)
        backbone.apply_gradients(zip(gradients[:2], variables[:2]))
        head.apply_gradients(zip(gradients[2:], variables[2:]))

    setup = {"model": model, "optimizers": [backbone, head], "train_step": train_step, "data_loss": loss}
    report = verify(setup, ordered_expectations=[(False, "*"), (True, "backbone/kernel"), (True, "head/*")])
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    for path in ("head/kernel", "head/bias"):
        head_variable = by_path(report, path)
        assert head_variable.measured == "decoupled"
        assert head_variable.decoupled_by == ("optimizers[1] AdamW weight_decay=0.05",)
        assert head_variable.decoupled_rate == pytest.approx(1e-3 * 0.05)
        assert head_variable.decoupled_ratio == pytest.approx(1.0, rel=1e-2)
    assert by_path(report, "backbone/kernel").decoupled_by == ("optimizers[0] AdamW weight_decay=0.1",)
    wrong = verify(setup)  # kernels-only: the head bias decays against intent
    assert {m.path for m in wrong.mismatches} == {"head/bias"}


def test_multi_optimizer_attributes_decay_per_sub_optimizer():
    model, backbone, head = _backbone_head()
    multi = keras.optimizers.MultiOptimizer(keras.optimizers.OptimizerMap(backbone, {"head/.*": head}))
    model.compile(optimizer=multi, loss="mse")
    report = verify(model)
    assert {m.path for m in report.mismatches} == {"head/bias"}
    # Keras lists the mapped optimizers first, then the default one
    assert by_path(report, "head/kernel").decoupled_by == ("MultiOptimizer.optimizers[0] AdamW weight_decay=0.05",)
    assert by_path(report, "backbone/kernel").decoupled_by == ("MultiOptimizer.optimizers[1] AdamW weight_decay=0.1",)


def test_same_variable_decayed_by_two_optimizers_is_double_decay():
    model, backbone, head = _backbone_head()
    loss = keras.losses.MeanSquaredError()

    def train_step(model, optimizer, x, y):
        for optimizer in (backbone, head):
            with tf.GradientTape() as tape:
                value = loss(y, model(x, training=True))
            optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))

    report = verify({"model": model, "optimizers": [backbone, head], "train_step": train_step, "data_loss": loss})
    assert outcomes(report)["backbone/kernel"] is Outcome.DOUBLE_DECAY
    assert len(by_path(report, "backbone/kernel").decoupled_by) == 2


# ---- noise is not decay ---------------------------------------------------------------


def _conv_bn_model():
    l2 = keras.regularizers.L2(5e-4)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, name="conv", kernel_regularizer=l2)(inputs)  # its bias feeds BatchNorm
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    return keras.Model(inputs, keras.layers.Dense(4, name="head", kernel_regularizer=l2)(x))


@pytest.mark.parametrize("with_data_loss", [True, False])
def test_bias_before_batchnorm_in_a_traced_custom_step_is_not_coupled_decay(with_data_loss):
    model = _conv_bn_model()
    optimizer = keras.optimizers.Adam(1e-3)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(model, optimizer, x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True)) + tf.add_n(model.losses)
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))

    setup = {"model": model, "optimizer": optimizer, "train_step": train_step}
    if with_data_loss:
        setup["data_loss"] = loss
    report = verify(setup, steps=4)
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    assert by_path(report, "conv/bias").measured == "none"
    assert by_path(report, "conv/kernel").measured == "coupled"


def test_hand_written_penalty_on_a_gradient_starved_bias_is_still_seen():
    model = _conv_bn_model()
    optimizer = keras.optimizers.Adam(1e-3)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(model, optimizer, x, y):
        with tf.GradientTape() as tape:
            penalty = tf.add_n([tf.reduce_sum(tf.square(v)) for v in model.trainable_variables])
            value = loss(y, model(x, training=True)) + 1e-3 * penalty
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))

    report = verify({"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": loss})
    bias = by_path(report, "conv/bias")
    assert bias.outcome is Outcome.DECAYED_AGAINST_INTENT and "hand-written step" in bias.detail


# ---- coupled magnitudes ----------------------------------------------------------------


def test_coupled_l2_reports_penalty_gradient_and_optimizer_effect_separately():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, name="dense1", kernel_regularizer=keras.regularizers.L2(5e-4))(inputs)
    model = keras.Model(
        inputs, keras.layers.Dense(4, name="dense2", kernel_regularizer=keras.regularizers.L2(5e-4))(hidden)
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    report = verify(model)
    assert report.ok, report.mismatches
    kernel = by_path(report, "dense1/kernel")
    assert kernel.penalty_gradient == pytest.approx(2 * 5e-4, rel=1e-4)
    assert kernel.coupled_by == ("model regularizer L2(l2=0.0005) on dense1/kernel",)
    assert "penalty gradient 0.001 x w" in kernel.detail and "after the optimizer" in kernel.detail


# ---- the backend table ------------------------------------------------------------------


def test_backend_table_and_restore_of_every_knob():
    names = [name for name, _ in BACKENDS]
    assert names[-1] == "tensorflow"  # the catch-all for TensorFlow; tf_keras models are claimed first
    assert names.index("tf_keras") < names.index("tensorflow")
    assert load_backend("tensorflow").name == "tensorflow"
    l2 = keras.regularizers.L2(1e-3)
    inputs = keras.Input((8,))
    model = keras.Model(inputs, keras.layers.Dense(2, name="d", kernel_regularizer=l2)(inputs))
    optimizer = keras.optimizers.Muon(1e-2, weight_decay=0.1, adam_weight_decay=0.2)
    model.compile(optimizer=optimizer, loss="mse")
    report = verify(model)
    assert report.backend == "tensorflow"
    assert set(report.decay_sources) == {
        "Muon weight_decay=0.1",
        "Muon adam_weight_decay=0.2",
        "model regularizer L2(l2=0.001) on d/kernel",
    }
    assert optimizer.weight_decay == 0.1 and optimizer.adam_weight_decay == 0.2
    assert model.get_layer("d").kernel.regularizer is l2
    x = np.ones((2, 8), "float32")
    model.fit(x, np.ones((2, 2), "float32"), verbose=0)  # still trains after the probe


@keras.saving.register_keras_serializable(package="decay_audit_tests")
class TwoOptimizerModel(keras.Model):
    """Model Garden-style: the model holds a second optimizer and its own train_step applies both."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.backbone = keras.layers.Dense(8, name="backbone")
        self.head = keras.layers.Dense(3, name="head")
        self.head_optimizer = keras.optimizers.AdamW(1e-3, weight_decay=0.05)

    def call(self, x, training=False):
        return self.head(self.backbone(x))

    def train_step(self, data):
        x, y = data
        with tf.GradientTape() as tape:
            loss = self.compute_loss(x=x, y=y, y_pred=self(x, training=True), training=True)
        backbone, head = self.backbone.trainable_variables, self.head.trainable_variables
        gradients = tape.gradient(loss, backbone + head)
        self.optimizer.apply(gradients[: len(backbone)], backbone)
        self.head_optimizer.apply(gradients[len(backbone) :], head)
        return {"loss": loss}


def test_subclassed_train_step_with_an_optimizer_held_by_the_model():
    model = TwoOptimizerModel()
    model(np.zeros((2, 8), "float32"))
    backbone = keras.optimizers.AdamW(1e-2, weight_decay=0.1)
    backbone.exclude_from_weight_decay(var_names=["bias"])
    model.compile(optimizer=backbone, loss="mse")
    report = verify(model, ordered_expectations=[(False, "*"), (True, "*/backbone/kernel"), (True, "*/head/*")])
    assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    head_bias = next(m for m in report.measurements if m.path.endswith("head/bias"))
    assert head_bias.decoupled_by == ("model.head_optimizer AdamW weight_decay=0.05",)
    assert head_bias.decoupled_ratio == pytest.approx(1.0, rel=1e-2)
    assert model.head_optimizer.weight_decay == 0.05


def test_fine_tuning_l2_penalty_is_seen_through_an_amplified_twin():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, name="dense1", kernel_regularizer=keras.regularizers.L2(1e-6))(inputs)
    model = keras.Model(
        inputs, keras.layers.Dense(4, name="dense2", bias_regularizer=keras.regularizers.L2(1e-6))(hidden)
    )
    model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse")  # 2 * lr * l2 = 2e-10 per step
    report = verify(model)
    result = outcomes(report)
    assert result["dense1/kernel"] is Outcome.OK and by_path(report, "dense1/kernel").measured == "coupled"
    assert result["dense2/bias"] is Outcome.DECAYED_AGAINST_INTENT
    assert result["dense2/kernel"] is Outcome.NOT_DECAYED and result["dense1/bias"] is Outcome.OK


DECAYING_OPTIMIZERS = [
    "SGD",
    "Adam",
    "AdamW",
    "Adamax",
    "Nadam",
    "RMSprop",
    "Adagrad",
    "Adadelta",
    "Lion",
    "Lamb",
    "Adafactor",
    "Ftrl",
    "Muon",
    "ScheduleFreeAdamW",
]


@pytest.mark.parametrize("name", DECAYING_OPTIMIZERS)
def test_every_optimizer_at_lr_wd_1e_9_catches_leaks_and_passes_exclusions(name):
    def make(exclude):
        kwargs = {"learning_rate": 1e-5, "weight_decay": 1e-4}
        if name == "Muon":
            kwargs["adam_weight_decay"] = 1e-4
        return verify_setups.compiled(getattr(keras.optimizers, name)(**kwargs), exclude=exclude)

    correct = verify(make(True))
    assert correct.ok, [(m.path, m.detail) for m in correct.mismatches]
    assert all(m.decoupled_steps and m.amplified for m in correct.measurements if m.expected_decay)
    leaking = verify(make(False))
    assert {m.path for m in leaking.mismatches} == {"dense1/bias", "dense2/bias"}


def test_a_model_no_backend_accepts_is_a_one_line_input_error():
    from decay_audit.errors import DecayAuditError
    from decay_audit.probe.backends import NoBackendError
    from decay_audit.probe.setup import TrainingSetup

    class NotAModel:
        variables = ()

    with pytest.raises(NoBackendError, match="no probe backend accepts") as caught:
        backend_for(TrainingSetup(NotAModel(), None, description="x.py:make"))
    assert isinstance(caught.value, DecayAuditError)
    with pytest.raises(NoBackendError, match="no probe backend named 'nope'"):
        load_backend("nope")


@pytest.mark.parametrize("exclude_biases", [True, False])
def test_noise_floor_is_calibrated_on_a_step_that_is_not_reproducible(exclude_biases):
    """Like GPU kernels without determinism: every run of the step differs a little. The real step
    repeated from the same snapshot measures that, and it is not reported as decay; a leak still is.
    Before the floor was kept at every step and differences had to be shaped like decay, one run
    in ~30 reported dense2's 4-element bias as decayed (21 of 600); after it, 0 false reports in
    600 runs and the leak caught in 200 of 200. The jitter still differs at every call, but from
    fixed global and op seeds, so a CI run draws the same jitter whatever ran before it."""
    model = builders.seed_model()
    tf.random.set_seed(20261205)
    optimizer = keras.optimizers.SGD(0.1, weight_decay=0.1)
    if exclude_biases:
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name == "bias"])
    loss = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(model, optimizer, x, y):
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        gradients = tape.gradient(value, model.trainable_variables)
        jittered = [g + tf.random.normal(tf.shape(g), stddev=1e-5, seed=i) for i, g in enumerate(gradients)]
        optimizer.apply_gradients(zip(jittered, model.trainable_variables))

    report = verify({"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": loss})
    assert any("not reproducible" in note for note in report.notes), report.notes
    if exclude_biases:
        assert report.ok, [(m.path, m.detail) for m in report.mismatches]
    else:
        assert {m.path for m in report.mismatches} == {"dense1/bias", "dense2/bias"}
    assert all(m.decoupled_ratio == pytest.approx(1.0, abs=0.05) for m in report.measurements if m.decoupled_steps)


def test_a_reproducible_step_measures_its_noise_once():
    report = verify(verify_setups.compiled(keras.optimizers.AdamW(1e-3, weight_decay=0.01), exclude=True))
    assert report.ok and not any("not reproducible" in note for note in report.notes), report.notes


def test_an_unknown_decay_attribute_of_a_custom_optimizer_is_named_in_a_note():
    class ShrinkingSGD(keras.optimizers.SGD):
        def __init__(self, shrink_decay=0.01, **kwargs):
            super().__init__(**kwargs)
            self.shrink_decay = shrink_decay

    report = verify(verify_setups.compiled(ShrinkingSGD(learning_rate=0.01, weight_decay=0.1)))
    assert any("shrink_decay" in note and "not measured" in note for note in report.notes), report.notes


def test_hand_written_step_closing_over_model_and_optimizer():
    model = builders.seed_model()
    optimizer = keras.optimizers.AdamW(1e-2, weight_decay=0.1)  # no exclusions: biases decay
    loss = keras.losses.MeanSquaredError()

    @tf.function
    def train_step(batch):
        x, y = batch
        with tf.GradientTape() as tape:
            value = loss(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))

    report = verify({"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": loss})
    assert {m.path for m in report.mismatches} == {"dense1/bias", "dense2/bias"}
