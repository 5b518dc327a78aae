"""A long atheris run of one entry point, restarted after each libhdf5 hang, summed up.

    python tests/fuzz/long_run.py TARGET --executions 100000 [--max-seconds 1200] [--timeout 5]

libFuzzer stops at the first input that runs longer than ``--timeout`` seconds (for the h5
readers: libhdf5 looping inside one C call, which the reader child bounds with read-seconds
in a real scan, as tests/fixtures/fuzz/hdf5_loop.h5 did before attributes were read
by loaders/_h5header.py) and at a signal (a segfault inside h5py or
libhdf5, which kills only the reader child in a real scan). This supervisor keeps the
corpus and the crash table across restarts, so coverage found before a hang is kept, and
prints one JSON line: executions, wall seconds, hangs (timeouts), distinct crashes.
Run it under ``nice -n 10`` on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


STUCK_SECONDS = 60
"""A fuzzer process whose execution count has not moved for this long is stuck, not slow:
libFuzzer's out-of-memory report can deadlock inside a Python process (seen twice, a futex wait
after libhdf5 asked for gigabytes). It is killed, counted and restarted; its input is lost."""


def _run_watched(command: list[str], env: dict[str, str], state: Path) -> subprocess.CompletedProcess | None:
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last, moved = None, time.monotonic()
    while True:
        try:
            stdout, stderr = process.communicate(timeout=10)
            return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            try:
                count = json.loads(state.read_text())["executions"] if state.exists() else None
            except (OSError, ValueError, KeyError):
                count = None
            if count != last:
                last, moved = count, time.monotonic()
            elif time.monotonic() - moved > STUCK_SECONDS:
                process.kill()
                process.communicate()
                return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target")
    parser.add_argument("--executions", type=int, default=100_000)
    parser.add_argument("--max-seconds", type=int, default=1200)
    parser.add_argument("--timeout", type=int, default=5)
    parser.add_argument("--artifacts", type=Path, default=HERE.parent / "fixtures" / "fuzz")
    args, extra = parser.parse_known_args()
    work = Path(tempfile.mkdtemp(prefix=f"long-{args.target}-"))
    state, corpus = work / "state.json", work / "corpus"
    env = {**os.environ, "FUZZ_STATE": str(state), "FUZZ_CORPUS": str(corpus)}
    start, hangs, restarts, hang_files, deaths, death_files, stuck = time.monotonic(), 0, 0, [], 0, [], 0
    while True:
        done = json.loads(state.read_text())["executions"] if state.exists() else 0
        left_seconds = args.max_seconds - (time.monotonic() - start)
        if done >= args.executions or left_seconds < 5:
            break
        before = set(args.artifacts.glob(f"{args.target}-timeout-*"))
        before_deaths = set(args.artifacts.glob(f"{args.target}-crash-*"))
        before_ooms = set(args.artifacts.glob(f"{args.target}-oom-*"))
        result = _run_watched(
            [
                sys.executable,
                str(HERE / "fuzz_atheris.py"),
                args.target,
                f"-runs={args.executions - done}",
                f"-max_total_time={int(left_seconds)}",
                f"-timeout={args.timeout}",
                f"-artifact_prefix={args.artifacts}/{args.target}-",
                "-print_final_stats=0",
                *extra,
            ],
            env,
            state,
        )
        if result is None:
            stuck += 1
            restarts += 1
            continue
        for line in (result.stdout + result.stderr).splitlines():
            if line.startswith("CRASH "):
                print(line, file=sys.stderr, flush=True)
        new_hangs = set(args.artifacts.glob(f"{args.target}-timeout-*")) - before
        new_deaths = set(args.artifacts.glob(f"{args.target}-crash-*")) - before_deaths
        new_ooms = set(args.artifacts.glob(f"{args.target}-oom-*")) - before_ooms
        if "libFuzzer: timeout" in result.stderr or new_hangs:
            hangs += 1
            hang_files += [str(p) for p in new_hangs]
        elif "deadly signal" in result.stderr or "out-of-memory" in result.stderr or new_ooms:
            # A crash inside a C library (h5py/libhdf5): a real scan's reader child dies and
            # the parent reports it in one line. Kept as an artifact, and the run goes on.
            deaths += 1
            death_files += [str(p) for p in new_deaths | new_ooms]
        elif result.returncode != 0 and "Done" not in result.stderr:
            print(result.stderr[-3000:], file=sys.stderr)
            break
        restarts += 1
    final = json.loads(state.read_text()) if state.exists() else {"executions": 0, "crashes": {}}
    shutil.rmtree(work, ignore_errors=True)  # the corpus: artifacts worth keeping are in --artifacts
    wall = time.monotonic() - start
    print(
        json.dumps(
            {
                "target": args.target,
                "executions": final["executions"],
                "wall_seconds": round(wall),
                "exec_per_second": round(final["executions"] / max(wall, 1)),
                "processes": restarts,
                "hangs": hangs,
                "hang_inputs": hang_files,
                "c_library_crashes": deaths,
                "c_crash_inputs": death_files,
                "stuck_processes_killed": stuck,
                "distinct_crashes": len(final["crashes"]),
                "crashes": final["crashes"],
            }
        )
    )


if __name__ == "__main__":
    main()
