"""Cheap mistakes fail before TensorFlow is imported: each one timed as a whole process.

    python benchmarks/bench_fail_fast.py [--repeats 5] [--baseline-tf]

Each case is a command a user mistypes (``--setup train.py`` without ``:FUNCTION``, a misspelled
function, a missing file or model, an unknown backend or preset, a missing rule file, a bad
pyproject setting or baseline). Every one must exit 2 with one line; the script times it as a
whole process, median of ``--repeats`` runs, and prints each figure with its ratio against
``python -c "import click"`` measured in the same run (the floor for any click program). The
target is under one second for every case: before these checks, ``verify --setup train.py``
imported TensorFlow and Keras first (tens of seconds on a cold cache).

``--baseline-tf`` adds ``python -c "import tensorflow"`` for scale: what each case would cost if
it imported TensorFlow first.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
TARGET_SECONDS = 1.0
CLI = [sys.executable, "-m", "decay_audit.cli"]

SETUP = "import keras\n\n\ndef make():\n    raise RuntimeError('never called by a cheap check')\n"


def cases(work: Path) -> dict[str, list[str]]:
    (work / "train.py").write_text(SETUP)
    (work / "bad_baseline.json").write_text('{"version": 99, "findings": []}')
    project = work / "project"
    project.mkdir()
    (project / "pyproject.toml").write_text('[tool.decay-audit]\npresett = "ndim"\n')
    model = Path(__file__).resolve().parents[1] / "sample_models" / "seed.keras"
    return {
        "verify --setup train.py (no :FUNCTION)": ["verify", "--setup", "train.py"],
        "verify --setup train.py:mkae (misspelled)": ["verify", "--setup", "train.py:mkae"],
        "verify --setup missing.py:make": ["verify", "--setup", "missing.py:make"],
        "verify missing.keras": ["verify", "missing.keras"],
        "verify --backend jaxx": ["verify", "--setup", "train.py:make", "--backend", "jaxx"],
        "verify --rules missing.json": ["verify", "--setup", "train.py:make", "--rules", "missing.json"],
        "verify --preset nope": ["verify", "--setup", "train.py:make", "--preset", "nope"],
        "scan --baseline (version 99)": ["scan", str(model), "--baseline", "bad_baseline.json"],
        "scan in a project with an unknown key": ["scan", str(model), "@project"],
    }


def timed(command: list[str], cwd: Path) -> tuple[float, int, str]:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=ENV, capture_output=True, text=True)
    return time.perf_counter() - start, done.returncode, done.stderr


def median_of(command: list[str], cwd: Path, repeats: int) -> tuple[float, int, str]:
    runs = [timed(command, cwd) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), runs[-1][1], runs[-1][2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline-tf", action="store_true", help="also time `python -c 'import tensorflow'`")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        work = Path(directory)
        floor, _, _ = median_of([sys.executable, "-c", "import click"], work, args.repeats)
        print(f"python -c 'import click': {floor:.3f} s (median of {args.repeats})")
        if args.baseline_tf:
            tf, _, _ = median_of([sys.executable, "-c", "import tensorflow"], work, max(1, args.repeats // 2))
            print(f"python -c 'import tensorflow': {tf:.2f} s")
        print()
        print("| case | median s | x import click | exit | one line |")
        print("| --- | --- | --- | --- | --- |")
        failures = 0
        for label, argv in cases(work).items():
            cwd = work / "project" if argv[-1] == "@project" else work
            argv = [a for a in argv if a != "@project"]
            seconds, code, stderr = median_of(CLI + argv, cwd, args.repeats)
            one_line = len(stderr.strip().splitlines()) == 1 and "Traceback" not in stderr
            ok = code == 2 and one_line and seconds < TARGET_SECONDS
            failures += not ok
            print(f"| {label} | {seconds:.3f} | {seconds / floor:.1f} | {code} | {'yes' if one_line else 'NO'} |")
        print()
        print(f"whole processes, median of {args.repeats}, {os.cpu_count()} CPUs; target < {TARGET_SECONDS} s each")
        if failures:
            print(f"{failures} case(s) missed: exit 2, one line, under {TARGET_SECONDS} s", file=sys.stderr)
        return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
