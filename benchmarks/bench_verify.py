"""What ``verify`` costs against the same number of plain ``model.fit`` steps, in one run.

    python benchmarks/bench_verify.py [--steps 3] [--repeats 3]

Mid-size model: a small ResNet-style CNN (about 1 M parameters, BatchNorm, Dropout)
on 32x32x3 inputs, AdamW with bias/norm exclusions. Each measurement is a fresh
process (model built, then timed), median of ``--repeats``: ``model.fit`` for N steps
(including its tf.function trace, as a user's first steps pay it) versus
``decay_audit.verify(model, steps=N)``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}

BUILD = """
import os, sys, time
import keras, numpy as np
L = keras.layers
inputs = keras.Input((32, 32, 3))
x = L.Conv2D(64, 3, padding="same")(inputs)
for filters in (64, 128, 128, 256):
    shortcut = L.Conv2D(filters, 1, padding="same")(x)
    x = L.Conv2D(filters, 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(filters, 3, padding="same")(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(L.Add()([x, shortcut]))
    x = L.MaxPooling2D()(x)
x = L.GlobalAveragePooling2D()(x)
x = L.Dropout(0.2)(x)
outputs = L.Dense(10)(x)
model = keras.Model(inputs, outputs)
optimizer = keras.optimizers.AdamW(1e-3, weight_decay=1e-2)
optimizer.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if v.name != "kernel"])
model.compile(optimizer=optimizer, loss="mse")
steps = int(sys.argv[2])
"""

FIT = (
    BUILD
    + """
x = np.random.normal(size=(4 * steps, 32, 32, 3)).astype("float32")
y = np.random.normal(size=(4 * steps, 10)).astype("float32")
start = time.perf_counter()
model.fit(x, y, batch_size=4, epochs=1, steps_per_epoch=steps, verbose=0)
print(time.perf_counter() - start, model.count_params())
"""
)

VERIFY = (
    BUILD
    + """
from decay_audit.stages.verify import verify
start = time.perf_counter()
report = verify(model, steps=steps)
assert report.ok, report.mismatches
print(time.perf_counter() - start, model.count_params())
"""
)


def measure(code: str, steps: int, repeats: int) -> tuple[float, int]:
    times, params = [], 0
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", code, "x", str(steps)], capture_output=True, text=True, env=ENV, check=True
        ).stdout.split()
        times.append(float(out[-2]))
        params = int(out[-1])
    return statistics.median(times), params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    fit, params = measure(FIT, args.steps, args.repeats)
    probe, _ = measure(VERIFY, args.steps, args.repeats)
    print(
        f"model: {params / 1e6:.2f} M parameters, {args.steps} steps, batch 4, median of {args.repeats}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print(f"model.fit: {fit:.2f} s   verify: {probe:.2f} s   ratio verify/fit: {probe / fit:.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
