"""Reading many models at once, each in its own bounded reader (:mod:`decay_audit.loaders._isolate`).

The readers are forks of this process, not new interpreters, so 500 models cost 500 forks,
not 500 Python start-ups. Up to ``jobs`` readers run at once; the loader modules are
imported once in the parent before the first fork, so no child imports h5py again.

In a process that has imported TensorFlow (a notebook, a test suite), forking is unsafe;
the reads then go to ONE helper interpreter (``python -m decay_audit.loaders._pool``) that
forks the readers itself, so the sweep still costs one interpreter start, not one per model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

from decay_audit.errors import DecayAuditError, ModelLoadError
from decay_audit.inventory import Inventory
from decay_audit.loaders._isolate import encode_inventory, inventory_from_reply
from decay_audit.loaders.interface import Limits

ReadResult = tuple[Path, "Inventory | DecayAuditError"]
"""A model's path and its inventory, or the error that reading it raised."""


def default_jobs() -> int:
    """The CPUs this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def read_many(paths: Sequence[Path], limits: Limits, jobs: int) -> Iterator[ReadResult]:
    """Every model read, in order, ``jobs`` readers at a time, by forks of this process or, where
    forking is unsafe, of one helper interpreter."""
    can_fork = hasattr(os, "fork") and limits.read_seconds > 0
    if can_fork and "tensorflow" in sys.modules:
        return _read_in_helper(paths, limits, jobs)
    return _read_all(paths, limits, jobs)


def _preload_loaders() -> None:
    """Import every loader before the first fork, so each child inherits them instead of
    importing h5py itself: the loaders import it lazily, on first use, and a forked child's
    import dies with it (measured: 280 ms of a tiny .keras file's 285 ms in the child)."""
    import h5py  # noqa: F401

    import decay_audit.loaders.h5_file  # noqa: F401
    import decay_audit.loaders.keras_zip  # noqa: F401
    import decay_audit.loaders.saved_model  # noqa: F401


def _read_all(paths: Sequence[Path], limits: Limits, jobs: int) -> Iterator[ReadResult]:
    from decay_audit.loaders import start_load

    _preload_loaders()
    window: deque = deque()
    queue = deque(paths)
    try:
        while queue or window:
            while queue and len(window) < jobs:
                path = queue.popleft()
                try:
                    window.append((path, start_load(path, limits)))
                except DecayAuditError as exc:
                    window.append((path, exc))
            path, pending = window.popleft()
            if isinstance(pending, DecayAuditError):
                yield path, pending
                continue
            try:
                yield path, pending.result()
            except DecayAuditError as exc:
                yield path, exc
    finally:
        for _, pending in window:  # interrupted: no reader outlives the scan
            if not isinstance(pending, DecayAuditError):
                pending.cancel()


def _read_in_helper(paths: Sequence[Path], limits: Limits, jobs: int) -> Iterator[ReadResult]:
    """The same reads, done by one fresh interpreter that forks the bounded readers; results
    come back as the readers' own JSON, one line per model."""
    import subprocess

    request = json.dumps({"models": [str(p) for p in paths], "limits": dataclasses.asdict(limits), "jobs": jobs})
    package_root = str(Path(__file__).resolve().parents[2])  # importable however this process found it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(
        [sys.executable, "-m", "decay_audit.loaders._pool"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(request.encode())
        process.stdin.close()
        for path in paths:
            line = process.stdout.readline()
            if not line:
                yield path, ModelLoadError(str(path), "the batch reader process ended early")
                continue
            try:
                yield path, inventory_from_reply(line, path, limits)
            except DecayAuditError as exc:
                yield path, exc
    finally:
        process.kill()
        process.wait()


def _helper_main() -> None:
    """``python -m decay_audit.loaders._pool``: read the models named on stdin, one JSON line each on stdout."""
    request = json.loads(sys.stdin.read())
    limits = Limits(**request["limits"])
    output = sys.stdout.buffer
    for _, result in _read_all([Path(m) for m in request["models"]], limits, request["jobs"]):
        if isinstance(result, DecayAuditError):
            line = json.dumps({"error": [type(result).__name__, result.subject, result.problem]}).encode()
        else:
            line = encode_inventory(result)
        output.write(line + b"\n")
        output.flush()


if __name__ == "__main__":
    _helper_main()
