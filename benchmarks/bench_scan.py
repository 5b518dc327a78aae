"""Scan at metadata speed, measured against what users run today.

    python benchmarks/bench_scan.py [--repeats 3] [--cache DIR] [--models tiny,small,base]

Builds ConvNeXtTiny/Small/Base from keras.applications with ``weights=None`` once (cached
outside the repo, default ~/.cache/decay-audit-bench), saved as ``.keras`` and as a SavedModel
(``model.export``). Then times, as whole processes, median of ``--repeats`` runs each:

- ``decay-audit scan MODEL --format json``,
- ``keras.saving.load_model(MODEL)`` + listing ``model.weights`` (the usual ad-hoc script),
- ``saved_model_cli show --all --dir SAVEDMODEL``,

with peak RSS of each, prints the ratios, and writes ``benchmarks/results.md``. Then a real
functional model with 3,000 parallel Dense layers (6,000 variables): its scan time, the scan
time of the 4-variable sample in the same run, and the cost per variable beyond that fixed
start-up (``--models "" --per-variable`` runs that row alone). Then ConvNeXtTiny's weights saved
sharded (``save_weights("x.weights.json", max_shard_size=...)``, 5 shards) against the same weights
unsharded (``x.weights.h5``): joining the shards must stay metadata speed, within 1.5x
(``--models "" --no-per-variable --sharded`` runs that row alone). Last, three speed ratios, each
against a baseline measured in the same rounds: the 6,000-variable scan within 3x ConvNeXtTiny's,
the table format within 1.1x of ``--format json``, ConvNeXtTiny's scan within 1.5x of the bare
``import h5py, numpy, click`` (``--models "" --no-per-variable --no-sharded --goals`` runs them alone).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODELS = {"tiny": "ConvNeXtTiny", "small": "ConvNeXtSmall", "base": "ConvNeXtBase"}
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
# Measured processes run from compiled bytecode, as an installed package does: with
# PYTHONDONTWRITEBYTECODE (set in some shells and CI images) every run would compile decay-audit's
# ~60 modules again (about 50 ms). The bytecode goes under the cache directory, not the checkout.
ENV.pop("PYTHONDONTWRITEBYTECODE", None)

# A wrapper whose only child is the measured command: RUSAGE_CHILDREN is then that command's peak RSS.
_MEASURE = (
    "import resource, subprocess, sys, time\n"
    "start = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode\n"
    "wall = time.perf_counter() - start\n"
    "print(code, wall, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def build(cache: Path, key: str) -> tuple[Path, Path, int]:
    keras_path = cache / f"{MODELS[key]}.keras"
    export_path = cache / f"{MODELS[key]}_export"
    count_path = cache / f"{MODELS[key]}.params"
    if not (keras_path.exists() and export_path.exists() and count_path.exists()):
        code = (
            "import sys, keras\n"
            f"m = getattr(keras.applications, {MODELS[key]!r})(weights=None)\n"
            f"m.save({str(keras_path)!r})\n"
            f"m.export({str(export_path)!r}, verbose=False)\n"
            f"open({str(count_path)!r}, 'w').write(str(m.count_params()))\n"
        )
        print(f"building {MODELS[key]} (once, cached in {cache}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
    return keras_path, export_path, int(count_path.read_text())


PARALLEL_BRANCHES = 3000


def build_parallel(cache: Path) -> Path:
    """A real functional model with 3,000 parallel Dense layers (6,000 variables, ~12 MB .keras)."""
    path = cache / f"Parallel{PARALLEL_BRANCHES}Dense.keras"
    if not path.exists():
        code = (
            "import keras\n"
            "inputs = keras.Input((4,))\n"
            f"outs = [keras.layers.Dense(2, name=f'branch_{{i}}')(inputs) for i in range({PARALLEL_BRANCHES})]\n"
            "model = keras.Model(inputs, keras.layers.Concatenate()(outs))\n"
            f"model.save({str(path)!r})\n"
        )
        print(f"building {path.name} (once, cached in {cache}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
    return path


def per_variable_rows(cache: Path, repeats: int, decay_audit: list[str], load_and_list: list[str]) -> list[str]:
    """Cost per variable beyond the fixed start-up: the 6,000-variable model against the 4-variable
    sample (same process kind, same run), and load_model on the same file for scale."""
    big = build_parallel(cache)
    tiny = HERE.parent / "sample_models" / "seed.keras"
    scan_big = measure(decay_audit + ["scan", str(big), "--format", "json"], repeats)
    scan_tiny = measure(decay_audit + ["scan", str(tiny), "--format", "json"], repeats)
    load_big = measure(load_and_list + [str(big)], max(1, repeats // 3))
    variables = 2 * PARALLEL_BRANCHES
    per_variable_ms = (scan_big[0] - scan_tiny[0]) / (variables - 4) * 1000
    return [
        "| model | variables | .keras MB | scan s / MiB | scan of a 4-variable model s | per variable beyond start-up "
        "| load_model+list s / MiB | speed-up |",
        "|" + " --- |" * 8,
        f"| {big.stem} | {variables:,} | {big.stat().st_size / 2**20:.0f} | {scan_big[0]:.3f} / {scan_big[1]:.0f} "
        f"| {scan_tiny[0]:.3f} | {per_variable_ms:.3f} ms | {load_big[0]:.1f} / {load_big[1]:.0f} "
        f"| {load_big[0] / scan_big[0]:.0f}x |",
    ]


SHARD_GB = 0.025
"""ConvNeXtTiny's 110 MB of float32 weights in ~27 MB shards: 5 shards, each read from memory."""


def build_sharded(cache: Path) -> tuple[Path, Path, int]:
    """ConvNeXtTiny's weights twice: one ``.weights.h5``, and sharded through a ``.weights.json`` index."""
    plain = cache / "ConvNeXtTiny.weights.h5"
    index = cache / "ConvNeXtTinySharded.weights.json"
    if not (plain.exists() and index.exists()):
        code = (
            "import keras\n"
            "m = keras.applications.ConvNeXtTiny(weights=None)\n"
            f"m.save_weights({str(plain)!r})\n"
            f"m.save_weights({str(index)!r}, max_shard_size={SHARD_GB})\n"
        )
        print(f"building sharded ConvNeXtTiny weights (once, cached in {cache}) ...", file=sys.stderr)
        subprocess.run([sys.executable, "-c", code], check=True, env=ENV)
    shards = len(list(cache.glob("ConvNeXtTinySharded_*.weights.h5")))
    return plain, index, shards


def sharded_rows(cache: Path, repeats: int, decay_audit: list[str]) -> tuple[list[str], float]:
    """The sharded checkpoint's scan against the same weights unsharded, and their ratio.

    The two are measured in turn, one run each per round, so a load that comes and goes on a
    shared machine weighs on both alike."""
    plain, index, shards = build_sharded(cache)
    runs: dict[Path, list[tuple[float, float]]] = {plain: [], index: []}
    for _ in range(repeats):
        for path, times in runs.items():
            times.append(measure(decay_audit + ["scan", str(path), "--format", "json"], 1))
    scan_plain, scan_sharded = (
        (statistics.median(t for t, _ in runs[p]), statistics.median(m for _, m in runs[p])) for p in (plain, index)
    )
    ratio = scan_sharded[0] / scan_plain[0]
    return [
        "| weights | files | scan s / MiB | sharded / unsharded |",
        "|" + " --- |" * 4,
        f"| {plain.name} | 1 | {scan_plain[0]:.3f} / {scan_plain[1]:.0f} | |",
        f"| {index.name} | index + {shards} shards | {scan_sharded[0]:.3f} / {scan_sharded[1]:.0f} | {ratio:.2f}x |",
    ], ratio


GOALS = {"wide / ConvNeXtTiny": 3.0, "table / json (wide)": 1.10, "ConvNeXtTiny / import floor": 1.5}
"""Upper bounds on the ratios ``goal_rows`` measures."""


def goal_rows(cache: Path, repeats: int, decay_audit: list[str]) -> tuple[list[str], dict[str, float]]:
    """Three ratios against baselines measured in the same run, one run of each command per round
    (so a load that comes and goes on a shared machine weighs on all alike), medians:

    - the 6,000-variable model's scan against ConvNeXtTiny's (both ``--format json``), with the
      cost per extra variable;
    - the same scan as a table (the default format) against ``--format json``;
    - ConvNeXtTiny's scan against the bare ``python -c "import h5py, numpy, click"``, the imports
      no metadata scan can avoid.
    """
    tiny_keras, _, _ = build(cache, "tiny")
    wide = build_parallel(cache)
    commands = {
        "import floor": [sys.executable, "-c", "import h5py, numpy, click"],
        "ConvNeXtTiny json": decay_audit + ["scan", str(tiny_keras), "--format", "json"],
        "wide json": decay_audit + ["scan", str(wide), "--format", "json"],
        "wide table": decay_audit + ["scan", str(wide), "--format", "table"],
    }
    for command in commands.values():  # warm-up: bytecode written, files in the page cache
        measure(command, 1)
    runs: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, command in commands.items():
            runs[name].append(measure(command, 1)[0])
    median = {name: statistics.median(times) for name, times in runs.items()}
    ratios = {
        "wide / ConvNeXtTiny": median["wide json"] / median["ConvNeXtTiny json"],
        "table / json (wide)": median["wide table"] / median["wide json"],
        "ConvNeXtTiny / import floor": median["ConvNeXtTiny json"] / median["import floor"],
    }
    tiny_variables = 182
    per_variable_ms = (median["wide json"] - median["ConvNeXtTiny json"]) / (2 * PARALLEL_BRANCHES - tiny_variables)
    lines = [
        "| command | median s |",
        "| --- | --- |",
        *(f"| {name} | {median[name]:.3f} |" for name in commands),
        "",
        "| ratio | measured | goal |",
        "| --- | --- | --- |",
        *(f"| {name} | {value:.2f}x | at most {GOALS[name]:.2f}x |" for name, value in ratios.items()),
        f"| per variable beyond ConvNeXtTiny's {tiny_variables} | {per_variable_ms * 1000:.3f} ms | at most 0.100 ms |",
    ]
    return lines, ratios


def measure(command: list[str], repeats: int) -> tuple[float, float]:
    """(median wall seconds, median peak RSS MiB) of a whole process."""
    walls, peaks = [], []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, *command], capture_output=True, text=True, env=ENV, check=True
        ).stdout.split()
        if out[0] != "0":
            raise SystemExit(f"command failed: {' '.join(command)}")
        walls.append(float(out[1]))
        peaks.append(int(out[2]) / 1024)
    return statistics.median(walls), statistics.median(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "decay-audit-bench")
    parser.add_argument("--models", default="tiny,small,base")
    parser.add_argument("--output", type=Path, default=HERE / "results.md")
    parser.add_argument(
        "--per-variable",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the 6,000-variable row (3,000 parallel Dense) with its per-variable cost",
    )
    parser.add_argument(
        "--sharded",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add ConvNeXtTiny's weights sharded against unsharded (must stay within 1.5x)",
    )
    parser.add_argument(
        "--goals",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the three speed ratios (wide/ConvNeXtTiny, table/json, ConvNeXtTiny/import floor) "
        '(``--models "" --no-per-variable --no-sharded --goals`` runs them alone)',
    )
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    ENV.setdefault("PYTHONPYCACHEPREFIX", str(args.cache / "pycache"))
    bin_dir = Path(sys.executable).parent
    decay_audit = [str(bin_dir / "decay-audit")]
    saved_model_cli = [str(bin_dir / "saved_model_cli")]
    load_and_list = [
        sys.executable,
        "-c",
        "import sys, keras; m = keras.saving.load_model(sys.argv[1]); "
        "print(len([(w.path, w.shape) for w in m.weights]))",
    ]
    rows = []
    scan_times = {}
    for key in filter(None, args.models.split(",")):
        keras_path, export_path, params = build(args.cache, key)
        scan_keras = measure(decay_audit + ["scan", str(keras_path), "--format", "json"], args.repeats)
        scan_saved = measure(decay_audit + ["scan", str(export_path), "--format", "json"], args.repeats)
        baseline_load = measure(load_and_list + [str(keras_path)], args.repeats)
        baseline_cli = measure(saved_model_cli + ["show", "--all", "--dir", str(export_path)], args.repeats)
        scan_times[key] = scan_keras[0]
        size_mb = keras_path.stat().st_size / 2**20
        rows.append((MODELS[key], params, size_mb, scan_keras, baseline_load, scan_saved, baseline_cli))
    header = (
        "| model | params | .keras MB | scan .keras s / MiB | load_model+list s / MiB | speed-up "
        "| scan SavedModel s / MiB | saved_model_cli s / MiB | speed-up |"
    )
    lines = [header, "|" + " --- |" * 9]
    for name, params, size_mb, scan_k, load_k, scan_s, cli_s in rows:
        lines.append(
            f"| {name} | {params / 1e6:.1f} M | {size_mb:.0f} | {scan_k[0]:.3f} / {scan_k[1]:.0f} "
            f"| {load_k[0]:.2f} / {load_k[1]:.0f} | {load_k[0] / scan_k[0]:.1f}x "
            f"| {scan_s[0]:.3f} / {scan_s[1]:.0f} | {cli_s[0]:.2f} / {cli_s[1]:.0f} "
            f"| {cli_s[0] / scan_s[0]:.1f}x |"
        )
    if args.per_variable:
        lines.append("")
        lines.extend(per_variable_rows(args.cache, args.repeats, decay_audit, load_and_list))
    if args.sharded:
        sharded, ratio = sharded_rows(args.cache, args.repeats, decay_audit)
        lines.append("")
        lines.extend(sharded)
        if ratio > 1.5:
            print(f"sharded scan {ratio:.2f}x the unsharded one: over the 1.5x bound", file=sys.stderr)
    if args.goals:
        goals, ratios = goal_rows(args.cache, max(args.repeats, 5), decay_audit)
        lines.append("")
        lines.extend(goals)
        for name, value in ratios.items():
            if value > GOALS[name]:
                print(f"{name}: {value:.2f}x, over the {GOALS[name]:.2f}x goal", file=sys.stderr)
    if "base" in scan_times and "small" in scan_times:
        lines.append("")
        lines.append(
            f"scan time ConvNeXtBase / ConvNeXtSmall: {scan_times['base'] / scan_times['small']:.2f} "
            "(parameter ratio about 1.6)"
        )
    lines.append("")
    lines.append(
        f"Whole processes, median of {args.repeats}, {os.cpu_count()} CPUs, "
        f"measured {time.strftime('%Y-%m-%d')} by `python benchmarks/bench_scan.py`."
    )
    text = "\n".join(lines) + "\n"
    print(text)
    args.output.write_text(text)


if __name__ == "__main__":
    main()
