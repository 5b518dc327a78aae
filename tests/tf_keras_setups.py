"""tf_keras (Keras 2) training set-ups for the verify tests, correct and broken, as Keras 2
and Hugging Face TF code writes them. Variable names are full tf_keras names
(``dense1/kernel:0``), which is what every regex below is searched in."""

from __future__ import annotations

import tensorflow as tf
import tf_keras

MSE = tf_keras.losses.MeanSquaredError()


def model(regularized: bool = False, dropout: bool = False, regularizer=None):
    """dense1 -> LayerNormalization named ``LayerNorm`` (BERT's spelling) -> dense2; both kernels carry
    ``regularizer`` (``regularized``: ``L2(1e-3)``)."""
    inputs = tf_keras.Input((6,))
    if regularizer is None and regularized:
        regularizer = tf_keras.regularizers.L2(1e-3)
    hidden = tf_keras.layers.Dense(5, name="dense1", kernel_regularizer=regularizer)(inputs)
    if dropout:
        hidden = tf_keras.layers.Dropout(0.3)(hidden)
    hidden = tf_keras.layers.LayerNormalization(name="LayerNorm")(hidden)
    return tf_keras.Model(inputs, tf_keras.layers.Dense(3, name="dense2", kernel_regularizer=regularizer)(hidden))


def compiled(optimizer, regularized: bool = False, dropout: bool = False, regularizer=None):
    built = model(regularized, dropout, regularizer)
    built.compile(optimizer=optimizer, loss="mse")
    return built


def adamw(var_names):
    optimizer = tf_keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_names=var_names)
    return compiled(optimizer)


def adam_weight_decay_var_list(exclude: bool = True):
    """New-style ``Adam(weight_decay=)``, exclusions by object."""
    built = model()
    optimizer = tf_keras.optimizers.Adam(learning_rate=1e-2, weight_decay=0.1)
    if exclude:
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in built.trainable_variables if "bias" in v.name or "LayerNorm" in v.name]
        )
    built.compile(optimizer=optimizer, loss="mse")
    return built


def hf_adam_weight_decay(exclude, include=None, learning_rate=1e-2, dropout=False):
    """transformers 4.x ``AdamWeightDecay`` (a legacy tf_keras Adam with its own decay hook)."""
    from transformers.optimization_tf import AdamWeightDecay

    optimizer = AdamWeightDecay(
        learning_rate=learning_rate,
        weight_decay_rate=0.1,
        exclude_from_weight_decay=exclude,
        include_in_weight_decay=include,
    )
    return compiled(optimizer, dropout=dropout)


def hand_written(select):
    """A Keras 2 tutorial loop: L2 added in the loss on the variables ``select(name)`` picks."""
    built = model()
    optimizer = tf_keras.optimizers.legacy.Adam(learning_rate=1e-2)

    @tf.function
    def train_step(model, optimizer, x, y):
        with tf.GradientTape() as tape:
            prediction = model(x, training=True)
            penalties = [tf.nn.l2_loss(v) for v in model.trainable_variables if select(v.name)]
            loss = MSE(y, prediction) + (1e-2 * tf.add_n(penalties) if penalties else 0.0)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    return {"model": built, "optimizer": optimizer, "train_step": train_step, "data_loss": MSE}


def tiny_bert_config(**extra):
    """A BERT config small enough to build in milliseconds: 50 tokens, hidden size 8, one layer."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=50,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=16,
        **extra,
    )


def tiny_bert_classifier(exclude):
    """transformers' TFBertForSequenceClassification (tiny random config) with the optimizer its
    ``create_optimizer`` builds: ``AdamWeightDecay(exclude_from_weight_decay=...)``."""
    from transformers import TFBertForSequenceClassification
    from transformers.optimization_tf import AdamWeightDecay

    config = tiny_bert_config(num_labels=3)
    bert = TFBertForSequenceClassification(config)
    bert(bert.dummy_inputs)
    bert.compile(
        optimizer=AdamWeightDecay(learning_rate=1e-3, weight_decay_rate=0.01, exclude_from_weight_decay=exclude),
        loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return bert


def subclassed(optimizer):
    """A subclassed tf_keras model: no ``model.inputs``, only the save spec its first call recorded."""

    class TwoDense(tf_keras.Model):
        def __init__(self):
            super().__init__(name="two_dense")
            self.dense1 = tf_keras.layers.Dense(5, name="dense1")
            self.dense2 = tf_keras.layers.Dense(3, name="dense2")

        def call(self, x):
            return self.dense2(self.dense1(x))

    built = TwoDense()
    built(tf_keras.Input((6,)))
    built.compile(optimizer=optimizer, loss="mse")
    return built
