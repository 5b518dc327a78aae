"""What :class:`decay_audit.keras.AuditCallback` adds to ``model.fit``, against 3 training steps, in one run.

    python benchmarks/bench_callback.py [--steps 20] [--repeats 5]

Small model (an MLP with a LayerNormalization, about 10 k parameters), AdamW with bias/norm
exclusions, batch 32. In one process, after a warm-up fit (TensorFlow's start-up is nobody's
cost), each repeat builds two identical fresh models and times ``fit`` of ``--steps`` steps on
each, one with the callback (its probe runs 3 steps) and one without, in alternating order; the
medians' difference is what the callback adds, and the time spent inside the callback's hook is
timed directly too (the difference of two fits is noisy on a shared machine; the hook's own time
is not, but misses any cost the probe leaves behind, which the difference would show). Two
baselines, both measured in the same run:

- the first 3 steps of a fresh ``fit`` (its tf.function trace included, as a user's first steps
  pay it): the budget the callback is held to, ``added / first 3 steps <= 1``;
- 3 steps of a ``fit`` whose step is already traced: what 3 steps cost once training runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from decay_audit.keras import AuditCallback  # noqa: E402

BATCH = 32


def build() -> keras.Model:
    inputs = keras.Input((32,))
    x = keras.layers.Dense(128, activation="relu", name="dense1")(inputs)
    x = keras.layers.LayerNormalization(name="norm")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense2")(x)
    outputs = keras.layers.Dense(10, name="head")(x)
    model = keras.Model(inputs, outputs)
    optimizer = keras.optimizers.AdamW(1e-3, weight_decay=1e-2)
    optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name != "kernel"])
    model.compile(optimizer=optimizer, loss="mse")
    return model


class TimedAudit(AuditCallback):
    """The callback, with the time its first-batch hook takes (the probe) recorded."""

    hook_seconds = 0.0

    def on_train_batch_begin(self, batch, logs=None):
        start = time.perf_counter()
        super().on_train_batch_begin(batch, logs)
        self.hook_seconds += time.perf_counter() - start


def timed_fit(model: keras.Model, x: np.ndarray, y: np.ndarray, steps: int, callbacks: list) -> float:
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20, help="fit steps per timed run (default 20)")
    parser.add_argument("--repeats", type=int, default=5, help="timed pairs; medians are reported (default 5)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH * args.steps, 32)).astype("float32")
    y = rng.normal(size=(BATCH * args.steps, 10)).astype("float32")

    warm = build()
    timed_fit(warm, x, y, 3, [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        timed_fit(build(), x, y, 3, [AuditCallback(preset="no-bias-norm", on_mismatch="warn")])

    plain, audited, hooks, first3, traced3 = [], [], [], [], []
    for repeat in range(args.repeats):
        callback = TimedAudit(preset="no-bias-norm")
        model = build()
        if repeat % 2:
            audited.append(timed_fit(build(), x, y, args.steps, [callback]))
            plain.append(timed_fit(model, x, y, args.steps, []))
        else:
            plain.append(timed_fit(model, x, y, args.steps, []))
            audited.append(timed_fit(build(), x, y, args.steps, [callback]))
        assert callback.report is not None and callback.report.ok, callback.report
        hooks.append(callback.hook_seconds)
        traced3.append(timed_fit(model, x, y, 3, []))  # the same model: its step is traced already
        first3.append(timed_fit(build(), x, y, 3, []))

    fit_plain, fit_audited = statistics.median(plain), statistics.median(audited)
    added, hook = fit_audited - fit_plain, statistics.median(hooks)
    first, traced = statistics.median(first3), statistics.median(traced3)
    print(f"model: {warm.count_params()} parameters, batch {BATCH}, {args.steps} fit steps, median of {args.repeats}")
    print(f"fit without callback      {fit_plain:8.3f} s")
    print(f"fit with AuditCallback    {fit_audited:8.3f} s")
    print(f"added by the callback     {added:8.3f} s  (difference of the two fits)")
    print(f"callback hook (probe)     {hook:8.3f} s  (timed inside the callback)")
    print(f"first 3 steps of a fit    {first:8.3f} s  (trace included)")
    print(f"3 steps, step traced      {traced:8.3f} s")
    print(f"added / first 3 steps     {added / first:8.2f}  (budget: <= 1)")
    print(f"hook / first 3 steps      {hook / first:8.2f}  (budget: <= 1)")
    print(f"hook / 3 traced steps     {hook / traced:8.2f}")


if __name__ == "__main__":
    main()
