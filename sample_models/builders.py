"""Small models covering every format and layer family decay-audit must handle.

Used by ``make_samples.py`` (the committed samples) and by the test suite's
session fixtures, so the tests and the samples exercise the same models.
Everything is built in code: nothing is downloaded.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

L = keras.layers


def seed_model() -> keras.Model:
    """The FACTS seed scenario: layers named ``dense1`` and ``dense2``."""
    inputs = keras.Input((8,), name="features")
    hidden = L.Dense(16, activation="relu", name="dense1")(inputs)
    outputs = L.Dense(4, name="dense2")(hidden)
    return keras.Model(inputs, outputs, name="seed")


@keras.saving.register_keras_serializable(package="decay_audit_samples")
class LayerScale(keras.layers.Layer):
    """ConvNeXt-style layer scale whose gain gets a generic name (``variable``), as in keras.applications."""

    def __init__(self, init_values: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.init_values = init_values

    def build(self, input_shape):
        self.gamma_like = self.add_weight(
            shape=(input_shape[-1],), initializer=keras.initializers.Constant(self.init_values)
        )

    def call(self, inputs):
        return inputs * self.gamma_like

    def get_config(self):
        return {**super().get_config(), "init_values": self.init_values}


@keras.saving.register_keras_serializable(package="decay_audit_samples")
class SimpleRMSNorm(keras.layers.Layer):
    """A custom RMS norm whose gain is called ``scale`` (Gemma's convention)."""

    def build(self, input_shape):
        self.scale = self.add_weight(name="scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, inputs):
        variance = keras.ops.mean(keras.ops.square(inputs), axis=-1, keepdims=True)
        return inputs * keras.ops.rsqrt(variance + 1e-6) * self.scale


def zoo_model(custom_layers: bool = True) -> keras.Model:
    """One functional model with every layer family the classifier must get right.

    ``custom_layers=False`` leaves out the two user classes, for rule targets that need
    every leaf name (a scan never imports user classes, so their leaves are positional)."""
    image = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", name="stem_conv")(image)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.PReLU(shared_axes=[1, 2], name="stem_prelu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.SeparableConv2D(4, 3, padding="same", name="sep")(x)
    x = L.GroupNormalization(groups=2, name="gn")(x)
    x = L.Conv2DTranspose(4, 2, name="deconv", use_bias=False)(x)
    if custom_layers:
        x = LayerScale(name="block_layer_scale")(x)
    x = L.GlobalAveragePooling2D()(x)
    x = L.Dense(6, name="image_proj")(x)

    tokens = keras.Input((5,), dtype="int32", name="tokens")
    t = L.Embedding(20, 6, name="token_embedding")(tokens)
    t = L.LayerNormalization(name="ln")(t)
    t = L.MultiHeadAttention(num_heads=2, key_dim=3, name="mha")(t, t)
    t = L.RMSNormalization(name="rms")(t)
    if custom_layers:
        t = SimpleRMSNorm(name="custom_norm")(t)
    t = L.EinsumDense("abc,cd->abd", output_shape=(5, 6), bias_axes="d", name="einsum")(t)
    t = L.Conv1D(6, 3, padding="same", name="conv1d")(t)
    t = L.LSTM(4, return_sequences=True, name="lstm")(t)
    t = L.Bidirectional(L.GRU(3), name="bigru")(t)

    merged = L.Concatenate()([x, t])
    merged = L.Dropout(0.1)(merged)
    outputs = L.Dense(2, name="head")(merged)
    return keras.Model([image, tokens], outputs, name="zoo")


ZOO_EXPECTED = {
    # leaf path → (kind, decayed) under the default kernels-only policy
    "stem_conv/kernel": ("kernel", True),
    "stem_conv/bias": ("bias", False),
    "stem_bn/gamma": ("norm", False),
    "stem_bn/beta": ("norm", False),
    "stem_bn/moving_mean": ("statistic", False),
    "stem_bn/moving_variance": ("statistic", False),
    "stem_prelu/alpha": ("scale", False),
    "dw/kernel": ("kernel", True),
    "dw/bias": ("bias", False),
    "sep/depthwise_kernel": ("kernel", True),
    "sep/pointwise_kernel": ("kernel", True),
    "sep/bias": ("bias", False),
    "gn/gamma": ("norm", False),
    "gn/beta": ("norm", False),
    "deconv/kernel": ("kernel", True),
    "block_layer_scale/variable": ("scale", False),
    "image_proj/kernel": ("kernel", True),
    "image_proj/bias": ("bias", False),
    "token_embedding/embeddings": ("embedding", False),
    "ln/gamma": ("norm", False),
    "ln/beta": ("norm", False),
    "mha/query/kernel": ("kernel", True),
    "mha/query/bias": ("bias", False),
    "mha/key/kernel": ("kernel", True),
    "mha/key/bias": ("bias", False),
    "mha/value/kernel": ("kernel", True),
    "mha/value/bias": ("bias", False),
    "mha/attention_output/kernel": ("kernel", True),
    "mha/attention_output/bias": ("bias", False),
    "rms/scale": ("norm", False),
    "custom_norm/scale": ("norm", False),
    "einsum/kernel": ("kernel", True),
    "einsum/bias": ("bias", False),
    "conv1d/kernel": ("kernel", True),
    "conv1d/bias": ("bias", False),
    "lstm/lstm_cell/kernel": ("kernel", True),
    "lstm/lstm_cell/recurrent_kernel": ("kernel", True),
    "lstm/lstm_cell/bias": ("bias", False),
    "forward_gru/gru_cell/kernel": ("kernel", True),
    "forward_gru/gru_cell/recurrent_kernel": ("kernel", True),
    "forward_gru/gru_cell/bias": ("bias", False),
    "backward_gru/gru_cell/kernel": ("kernel", True),
    "backward_gru/gru_cell/recurrent_kernel": ("kernel", True),
    "backward_gru/gru_cell/bias": ("bias", False),
    "head/kernel": ("kernel", True),
    "head/bias": ("bias", False),
}


def zoo_inputs(batch: int = 2):
    rng = np.random.default_rng(0)
    return [rng.normal(size=(batch, 8, 8, 3)).astype("float32"), rng.integers(0, 20, size=(batch, 5)).astype("int32")]


class SubclassedModel(keras.Model):
    """A subclassed model: its config names no sublayers, the h5 keys them by attribute."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense1 = L.Dense(8, name="dense1")
        self.norm = L.LayerNormalization()
        self.blocks = [L.Dense(8), L.Dense(8)]
        self.dense2 = L.Dense(2, name="dense2")

    def call(self, inputs):
        x = self.norm(self.dense1(inputs))
        for block in self.blocks:
            x = block(x)
        return self.dense2(x)


def subclassed_model() -> keras.Model:
    model = SubclassedModel(name="my_model")
    model(np.zeros((1, 4), "float32"))
    return model


def tf_keras_model():
    """A tf_keras (Keras 2) model: full variable names with ``:0``, keras_metadata.pb in SavedModels."""
    import tf_keras

    layers = tf_keras.layers
    inputs = tf_keras.Input((6,), dtype="int32")
    x = layers.Embedding(12, 4, name="embedding")(inputs)
    x = layers.LayerNormalization(name="LayerNorm")(x)
    x = layers.LSTM(3, name="lstm")(x)
    x = layers.Dense(4, name="dense1")(x)
    x = layers.BatchNormalization(name="bn")(x)
    outputs = layers.Dense(2, name="dense2")(x)
    return tf_keras.Model(inputs, outputs, name="k2")


def tf_module():
    """A plain tf.Module: no layers, no classes; only names, shapes and the graph speak."""
    import tensorflow as tf

    class Projection(tf.Module):
        def __init__(self, width: int, name: str):
            super().__init__(name=name)
            self.w = tf.Variable(tf.random.normal((width, width)), name="w")
            self.b = tf.Variable(tf.zeros((width,)), name="b")

    class TinyLM(tf.Module):
        def __init__(self):
            super().__init__(name="tiny_lm")
            self.table = tf.Variable(tf.random.normal((16, 4)), name="table")
            self.proj = Projection(4, "proj")
            self.out = Projection(4, "out")
            self.steps = tf.Variable(0, trainable=False, name="steps")

        @tf.function(input_signature=[tf.TensorSpec((None,), tf.int32)])
        def __call__(self, ids):
            x = tf.gather(self.table, ids)
            x = tf.nn.bias_add(tf.matmul(x, self.proj.w), self.proj.b)
            return tf.nn.bias_add(tf.matmul(x, self.out.w), self.out.b)

    return TinyLM()


MODULE_EXPECTED = {
    "table": ("embedding", False),
    "proj/w": ("kernel", True),
    "proj/b": ("bias", False),
    "out/w": ("kernel", True),
    "out/b": ("bias", False),
    "steps": ("statistic", False),
}


def save_all_formats(model, directory, stem: str) -> dict[str, str]:
    """Save a Keras 3 model as .keras, .h5, .weights.h5, model.export and tf.saved_model.save."""
    import tensorflow as tf

    os.makedirs(directory, exist_ok=True)
    paths = {
        "keras": os.path.join(directory, f"{stem}.keras"),
        "h5": os.path.join(directory, f"{stem}.h5"),
        "weights_h5": os.path.join(directory, f"{stem}.weights.h5"),
        "export": os.path.join(directory, f"{stem}_export"),
        "tf_saved": os.path.join(directory, f"{stem}_tfsaved"),
    }
    model.save(paths["keras"])
    model.save(paths["h5"])
    model.save_weights(paths["weights_h5"])
    model.export(paths["export"], verbose=False)
    tf.saved_model.save(model, paths["tf_saved"])
    return paths
