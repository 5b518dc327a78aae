"""A registry sweep: one ``decay-audit scan DIR`` against one process per model.

    python benchmarks/bench_batch.py [--models 100] [--repeats 3]

Copies the committed tiny samples (``seed.keras``, ``seed.h5``, ``seed.weights.h5``, the
``seed_export`` SavedModel) into a temporary tree of ``--models`` models, then times, as whole
processes (median of ``--repeats``):

- ``decay-audit scan DIR`` (one interpreter; each model read in a forked reader child),
- the same with ``--jobs 1``,
- ``decay-audit scan MODEL`` once per model, as a shell loop over a registry would do it
  (timed once: it is the slow baseline),

and prints seconds per model and the speed-up. Figures depend on the machine's load; the
ratio between the two, measured in the same run, is the result.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "sample_models"
SOURCES = ("seed.keras", "seed.h5", "seed.weights.h5", "seed_export")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(REPO)}


def make_tree(root: Path, count: int) -> list[Path]:
    models = []
    for index in range(count):
        source = SAMPLES / SOURCES[index % len(SOURCES)]
        target = root / f"team{index % 7}" / f"m{index:04d}_{source.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            shutil.copy(source, target)
        models.append(target)
    return models


def timed(args: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "decay_audit.cli", *args],
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    if result.returncode not in (0, 1):
        raise SystemExit(f"decay-audit {' '.join(args)} failed: {result.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        models = make_tree(root, options.models)
        batch = statistics.median(timed(["scan", str(root)]) for _ in range(options.repeats))
        serial = statistics.median(timed(["scan", str(root), "--jobs", "1"]) for _ in range(options.repeats))
        start = time.perf_counter()
        for model in models:
            timed(["scan", str(model)])
        loop = time.perf_counter() - start
    n = len(models)
    print(f"{n} models ({', '.join(SOURCES)}), {os.cpu_count()} CPUs, median of {options.repeats}")
    print("| run | total s | ms / model | vs one process per model |")
    print("| --- | --- | --- | --- |")
    print(f"| `scan DIR` | {batch:.2f} | {1000 * batch / n:.1f} | {loop / batch:.1f}x faster |")
    print(f"| `scan DIR --jobs 1` | {serial:.2f} | {1000 * serial / n:.1f} | {loop / serial:.1f}x faster |")
    print(f"| `scan MODEL` x {n} | {loop:.2f} | {1000 * loop / n:.1f} | 1x |")


if __name__ == "__main__":
    main()
