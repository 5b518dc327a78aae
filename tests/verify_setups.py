"""Training set-ups for the verify tests, broken and correct, as users write them.

The three "methods" are the hand-written selective-decay patterns of shared FACTS.md,
written against Keras 3 exactly as the tutorials write them for Keras 2.
"""

from __future__ import annotations

import builders
import keras
import tensorflow as tf

MSE = keras.losses.MeanSquaredError()


def data_loss(y_true, y_pred):
    return MSE(y_true, y_pred)


def method_1():
    """Adam(weight_decay) + L2 in the loss + a manual shrink filtered by '"dense2" in var.name'."""
    model = builders.seed_model()
    optimizer = keras.optimizers.Adam(learning_rate=1e-2, weight_decay=1e-2)

    @tf.function
    def train_step(model, optimizer, x, y):
        with tf.GradientTape() as tape:
            prediction = model(x, training=True)
            penalty = tf.add_n([tf.nn.l2_loss(v) for v in model.trainable_variables])
            loss = data_loss(y, prediction) + 1e-3 * penalty
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        for variable in model.trainable_variables:
            if "dense2" in variable.name:  # Keras 3: variable.name is "kernel" -> never true
                variable.assign_sub(1e-2 * variable)

    return {"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": data_loss}


def method_2():
    """L2 only where '"dense1" in var.name': in Keras 3 no variable gets the intended penalty."""
    model = builders.seed_model()
    optimizer = keras.optimizers.Adam(learning_rate=1e-2)

    @tf.function
    def train_step(model, optimizer, x, y):
        with tf.GradientTape() as tape:
            prediction = model(x, training=True)
            penalties = [tf.nn.l2_loss(v) for v in model.trainable_variables if "dense1" in v.name]
            loss = data_loss(y, prediction) + (1e-2 * tf.add_n(penalties) if penalties else 0.0)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    return {"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": data_loss}


STEP = 0


def method_3():
    """A Python-global step counter read inside tf.function: the switch is frozen at trace time."""
    model = builders.seed_model()
    optimizer = keras.optimizers.SGD(learning_rate=1e-2)

    @tf.function
    def train_step(model, optimizer, x, y):
        global STEP
        STEP += 1
        with tf.GradientTape() as tape:
            prediction = model(x, training=True)
            loss = data_loss(y, prediction)
            if STEP > 1:  # evaluated once, when traced
                loss += 1e-2 * tf.add_n([tf.nn.l2_loss(v) for v in model.trainable_variables if v.name == "kernel"])
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    return {"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": data_loss}


def compiled(optimizer, model=None, exclude=True):
    model = model or builders.seed_model()
    if exclude:
        optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name == "bias"])
    model.compile(optimizer=optimizer, loss="mse")
    return model
