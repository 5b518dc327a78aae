"""Soak: many scans of mixed real and hostile files from one long-lived process, in parallel.

    python tests/fuzz/soak.py --scans 1000 --workers 4

A service or notebook that calls ``decay_audit.scan`` over and over must not leak: every scan
forks a reader child, opens a pipe, and maps what the child sends back. This runs ``--scans``
scans from ``--workers`` threads of one parent over the sample models (every format) and hostile
inputs (truncated and bit-flipped files, a libhdf5 infinite loop, a libhdf5 heap bomb, a zip
bomb, a 200,000-deep config, a named pipe, /dev/zero, the fuzz fixtures), checks each file gives
the same outcome every time, and measures the parent's resident memory and open file
descriptors after a warm-up and at the end, and that no reader child is left behind.
Prints one JSON line; exit 1 when something grew or an outcome changed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import zipfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SAMPLES = REPO / "sample_models"
FIXTURES = REPO / "tests" / "fixtures" / "fuzz"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from decay_audit import scan  # noqa: E402
from decay_audit.errors import DecayAuditError  # noqa: E402
from decay_audit.loaders.interface import Limits  # noqa: E402

LIMITS = Limits(read_seconds=3, max_memory_mib=512)


def hostile_files(directory: Path) -> list[Path]:
    """Real models in every format plus hostile inputs, written under ``directory``."""
    files = [
        SAMPLES / n
        for n in (
            "seed.keras",
            "zoo.keras",
            "subclassed.keras",
            "seed.h5",
            "tf_keras.h5",
            "seed.weights.h5",
            "seed_export",
            "tf_keras_savedmodel",
            "tf_module_savedmodel",
            "zoo_export",
        )
    ]
    files += sorted(FIXTURES.iterdir())
    seed = (SAMPLES / "seed.keras").read_bytes()
    for name, data in (
        ("truncated.keras", seed[: len(seed) // 2]),
        ("flipped.keras", _flip(seed)),
        ("truncated.h5", (SAMPLES / "seed.h5").read_bytes()[:3000]),
        ("empty.keras", b""),
        ("text.keras", b"not a model\n" * 100),
    ):
        (directory / name).write_bytes(data)
        files.append(directory / name)
    deep = directory / "deep.keras"
    with zipfile.ZipFile(deep, "w") as archive:
        archive.writestr("config.json", "[" * 200_000 + "]" * 200_000)
        archive.writestr("model.weights.h5", b"")
    bomb = directory / "bomb.keras"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("config.json", b" " * (300 << 20))
        archive.writestr("model.weights.h5", b"")
    files += [deep, bomb]
    if hasattr(os, "mkfifo"):
        os.mkfifo(directory / "pipe.keras")
        files.append(directory / "pipe.keras")
    if os.path.exists("/dev/zero"):
        files.append(Path("/dev/zero"))
    return files


def _flip(data: bytes) -> bytes:
    buffer = bytearray(data)
    for position in range(100, len(buffer), 997):
        buffer[position] ^= 0x5A
    return bytes(buffer)


def outcome(path: Path) -> str:
    try:
        report = scan(path, limits=LIMITS)
    except DecayAuditError as exc:
        return f"error: {type(exc).__name__}: {exc.problem[:60]}"
    return f"ok: {len(report.variables)} variables"


def parent_state() -> tuple[float, int, int]:
    """(resident MiB, open file descriptors, child processes) of this process."""
    with open("/proc/self/statm") as handle:
        resident_pages = int(handle.read().split()[1])
    children = 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    fields = handle.read().rsplit(")", 1)[1].split()
                children += int(fields[1]) == os.getpid()
            except OSError:
                continue
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20, len(os.listdir("/proc/self/fd")), children


def soak(scans: int, workers: int, warmup: int) -> dict:
    directory = Path(tempfile.mkdtemp(prefix="decay-audit-soak-"))
    try:
        files = hostile_files(directory)
        expected: dict[Path, str] = {}
        for path in files:  # first pass, sequential: the outcome each file must keep
            expected[path] = outcome(path)
        order = [files[i % len(files)] for i in range(scans)]
        changed: list[str] = []
        counts: Counter[str] = Counter()
        lock = threading.Lock()
        samples: list[tuple[int, float, int]] = []
        done = [0]

        def one(path: Path) -> None:
            got = outcome(path)
            with lock:
                counts["ok" if got.startswith("ok") else "error"] += 1
                if got != expected[path]:
                    changed.append(f"{path.name}: {expected[path]!r} then {got!r}")
                done[0] += 1
                if done[0] == warmup or done[0] % 100 == 0:
                    resident, descriptors, _ = parent_state()
                    samples.append((done[0], resident, descriptors))

        start = time.monotonic()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, order))
        wall = time.monotonic() - start
        resident, descriptors, children = parent_state()
        after_warmup = next(s for s in samples if s[0] >= warmup)
        return {
            "scans": scans,
            "workers": workers,
            "files": len(files),
            "wall_seconds": round(wall, 1),
            "outcomes": dict(counts),
            "changed_outcomes": changed[:5],
            "rss_mib_after_warmup": round(after_warmup[1], 1),
            "rss_mib_end": round(resident, 1),
            "rss_growth_mib": round(resident - after_warmup[1], 1),
            "fds_after_warmup": after_warmup[2],
            "fds_end": descriptors,
            "children_left": children,
            "samples": [(n, round(r, 1), d) for n, r, d in samples],
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scans", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--max-rss-growth-mib", type=float, default=8.0)
    args = parser.parse_args()
    result = soak(args.scans, args.workers, min(args.warmup, args.scans))
    print(json.dumps(result))
    bad = (
        result["changed_outcomes"]
        or result["fds_end"] > result["fds_after_warmup"]
        or result["children_left"]
        or result["rss_growth_mib"] > args.max_rss_growth_mib
    )
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
