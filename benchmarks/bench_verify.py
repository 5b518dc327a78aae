"""What ``verify`` costs against the same number of plain ``model.fit`` steps, in one run.

    python benchmarks/bench_verify.py [--steps 3] [--repeats 3] [--model cnn|bert-base|all]

Mid-size model: a small ResNet-style CNN (about 1 M parameters, BatchNorm, Dropout)
on 32x32x3 inputs, AdamW with bias/norm exclusions. Each measurement is a fresh
process (model built, then timed), median of ``--repeats``: ``model.fit`` for N steps
(including its tf.function trace, as a user's first steps pay it) versus
``decay_audit.verify(model, steps=N)``.

``--model bert-base``: a BERT-base-sized keras_hub ``BertTextClassifier`` fine-tune (12 layers,
hidden 768, vocabulary 30522, random weights built from the config: nothing is downloaded), AdamW
5e-5 / 0.01 with biases and norms excluded, batch 4 x 128 tokens. Whole processes, measured once
each in the same run: building the set-up plus N ``fit`` steps, against ``decay-audit verify --setup
benchmarks/bench_verify.py:bert_base --preset no-bias-norm --steps N``; wall time and peak resident
memory (``os.wait4``'s ``ru_maxrss`` of each child). Goal: verify's peak memory at most 1.5x fit's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

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


BERT_BATCH = 4
BERT_SEQUENCE = 128


def bert_base() -> dict:
    """The set-up ``verify`` probes, and the one the fit process trains: a BERT-base-sized classifier
    with random weights (config only, no preset download), its own batch of 4 x 128 tokens."""
    import keras
    import keras_hub
    import numpy as np

    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=30522,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        intermediate_dim=3072,
        max_sequence_length=512,
    )
    model = keras_hub.models.BertTextClassifier(backbone=backbone, num_classes=2, preprocessor=None)
    optimizer = keras.optimizers.AdamW(5e-5, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(
        var_list=[v for v in model.trainable_variables if v.name in ("bias", "gamma", "beta")]
    )
    model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = {
        "token_ids": rng.integers(0, 30522, size=(BERT_BATCH, BERT_SEQUENCE)).astype("int32"),
        "segment_ids": np.zeros((BERT_BATCH, BERT_SEQUENCE), "int32"),
        "padding_mask": np.ones((BERT_BATCH, BERT_SEQUENCE), "int32"),
    }
    y = rng.integers(0, 2, size=(BERT_BATCH,)).astype("int32")
    return {"model": model, "optimizer": optimizer, "batch": (x, y)}


BERT_FIT = """
import sys, time
sys.path.insert(0, sys.argv[1])
from bench_verify import bert_base
steps = int(sys.argv[2])
setup = bert_base()
x, y = setup["batch"]
start = time.perf_counter()
for _ in range(steps):
    setup["model"].fit(x, y, batch_size=4, epochs=1, verbose=0)
print(time.perf_counter() - start, setup["model"].count_params())
"""


def whole_process(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak resident MiB (``os.wait4``: that child alone) and stdout of one child process."""
    import tempfile

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        child = subprocess.Popen(command, stdout=out, stderr=err, text=True, env=ENV)
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - start
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode not in (0, 1):
            raise SystemExit(f"{' '.join(command)} failed:\n{err.read()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def bench_bert(steps: int) -> None:
    """One fit process, then one verify process, each measured alone."""
    here = Path(__file__).resolve().parent
    fit_wall, fit_peak, out = whole_process([sys.executable, "-c", BERT_FIT, str(here), str(steps)])
    params = int(out.split()[-1])
    decay_audit = Path(sys.executable).with_name("decay-audit")
    verify_command = [str(decay_audit)] if decay_audit.exists() else [sys.executable, "-m", "decay_audit"]
    verify_wall, verify_peak, out = whole_process(
        verify_command
        + ["verify", "--setup", f"{here / 'bench_verify.py'}:bert_base", "--preset", "no-bias-norm"]
        + ["--steps", str(steps), "--quiet"]
    )
    verdict = out.strip().splitlines()[-1] if out.strip() else "?"
    print(
        f"bert-base: {params / 1e6:.1f} M parameters, batch {BERT_BATCH} x {BERT_SEQUENCE}, {steps} steps, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}, whole processes"
    )
    print(f"  build + {steps} fit steps: {fit_wall:.1f} s, peak {fit_peak:.0f} MiB")
    print(f"  decay-audit verify:      {verify_wall:.1f} s, peak {verify_peak:.0f} MiB ({verdict})")
    print(
        f"  ratio verify/fit: time {verify_wall / fit_wall:.2f}x, peak memory {verify_peak / fit_peak:.2f}x "
        "(goal: memory <= 1.5x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", choices=("cnn", "bert-base", "all"), default="cnn")
    args = parser.parse_args()
    if args.model in ("bert-base", "all"):
        bench_bert(args.steps)
    if args.model == "bert-base":
        return
    fit, params = measure(FIT, args.steps, args.repeats)
    probe, _ = measure(VERIFY, args.steps, args.repeats)
    print(
        f"model: {params / 1e6:.2f} M parameters, {args.steps} steps, batch 4, median of {args.repeats}, "
        f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
    )
    print(f"model.fit: {fit:.2f} s   verify: {probe:.2f} s   ratio verify/fit: {probe / fit:.2f}x (target <= 3x)")


if __name__ == "__main__":
    main()
