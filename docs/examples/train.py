"""Training set-ups used by the docs: the three hand-written selective-decay methods of the
tutorials (each broken in Keras 3), and a correct one. Every command in docs/ runs against them.

    decay-audit verify --setup docs/examples/train.py:method_1 --preset no-bias-norm
"""

import keras
import tensorflow as tf

MSE = keras.losses.MeanSquaredError()


def data_loss(y_true, y_pred):
    return MSE(y_true, y_pred)


def tiny_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(16, activation="relu", name="dense1")(inputs)
    outputs = keras.layers.Dense(4, name="dense2")(hidden)
    return keras.Model(inputs, outputs, name="tiny")


def make():
    """Correct: AdamW, biases excluded by var_list (not by name, which Keras 3 shortens to the leaf)."""
    model = tiny_model()
    optimizer = keras.optimizers.AdamW(learning_rate=1e-2, weight_decay=0.1)
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name == "bias"])
    model.compile(optimizer=optimizer, loss="mse")
    return model


def method_1():
    """Adam(weight_decay) + an L2 term in the loss + a manual shrink of '"dense2" in var.name'."""
    model = tiny_model()
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
            if "dense2" in variable.name:  # Keras 3: variable.name is "kernel", never "dense2/kernel"
                variable.assign_sub(1e-2 * variable)

    return {"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": data_loss}


def method_2():
    """An L2 penalty only where '"dense1" in var.name': in Keras 3 it reaches no variable."""
    model = tiny_model()
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
    """Decay switched on after the first step by a Python counter inside tf.function: frozen at trace time."""
    model = tiny_model()
    optimizer = keras.optimizers.SGD(learning_rate=1e-2)

    @tf.function
    def train_step(model, optimizer, x, y):
        global STEP
        STEP += 1
        with tf.GradientTape() as tape:
            prediction = model(x, training=True)
            loss = data_loss(y, prediction)
            if STEP > 1:  # a Python condition: evaluated once, when the function is traced
                loss += 1e-2 * tf.add_n([tf.nn.l2_loss(v) for v in model.trainable_variables if v.name == "kernel"])
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))

    return {"model": model, "optimizer": optimizer, "train_step": train_step, "data_loss": data_loss}
