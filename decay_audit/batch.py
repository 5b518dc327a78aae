"""Many models at once: ``decay-audit scan PATH...`` over files, directories and globs.

Discovery walks directories recursively and keeps what a scan can read: regular files whose
first bytes a loader recognises, and SavedModel directories (one model each, never entered).
Special files (FIFOs, devices, sockets) are never opened: opening a FIFO blocks, a device
may never end. Hidden directories (``.git``, ``.venv``) are not entered unless named.

Reading reuses the bounded reader child (:mod:`decay_audit.loaders._isolate`): a fork of
this process, not a new interpreter, so 500 models cost 500 forks, not 500 Python start-ups.
Up to ``jobs`` readers run at once; the loader modules are imported once in the parent
before the first fork, so no child imports h5py again.
"""

from __future__ import annotations

import glob
import os
import stat
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decay_audit.audit import ScanReport, scan_inventory
from decay_audit.errors import DecayAuditError
from decay_audit.loaders.interface import DEFAULT_LIMITS, Limits
from decay_audit.policy import Policy, Preset

_GLOB_MAGIC = frozenset("*?[")
_HEAD_BYTES = 4096


@dataclass(frozen=True)
class BatchItem:
    """One model of a multi-model scan: its report, or why it could not be read."""

    path: str
    """The model as discovered (a file, or a SavedModel directory)."""
    report: ScanReport | None
    """The scan report; None when the model could not be read."""
    error: str | None = None
    """One line naming the problem, when ``report`` is None."""


@dataclass(frozen=True)
class BatchTotals:
    """Sums over the models that could be read."""

    models: int
    """Models discovered (read or not)."""
    unreadable: int
    """Models that could not be read (each has an ``error``)."""
    variables: int
    decayed: int
    """Variables decayed under the policy."""
    excluded: int
    """Variables not decayed (excluded, or non-trainable)."""
    low_confidence: int
    findings: int
    """Findings as ``--format sarif`` reports them (low-confidence and conflicting verdicts, policy
    overrides, a saved optimizer that decays everything)."""
    strict_problems: int
    """What ``--strict`` exits 1 on: low-confidence and conflicting verdicts and dead overrides."""


@dataclass(frozen=True)
class ModelCounts:
    """One model's summary row."""

    variables: int
    decayed: int
    excluded: int
    low_confidence: int
    findings: int
    strict_problems: int


def counts(report: ScanReport) -> ModelCounts:
    from decay_audit.rulecheck import scan_findings

    summary = report.summary()
    return ModelCounts(summary.variables, summary.decayed_variables, summary.excluded_variables,
                       summary.low_confidence, len(scan_findings(report)), strict_problems(report))


def strict_problems(report: ScanReport) -> int:
    """The count ``scan --strict`` fails on (one definition for one model and for many)."""
    summary = report.summary()
    return summary.low_confidence + summary.conflicting + len(report.policy_findings.dead_overrides)


@dataclass(frozen=True)
class BatchReport:
    items: tuple[BatchItem, ...]

    @property
    def reports(self) -> tuple[ScanReport, ...]:
        return tuple(item.report for item in self.items if item.report is not None)

    @property
    def errors(self) -> tuple[BatchItem, ...]:
        return tuple(item for item in self.items if item.report is None)

    def totals(self) -> BatchTotals:
        rows = [counts(report) for report in self.reports]
        return BatchTotals(
            models=len(self.items), unreadable=len(self.errors),
            variables=sum(r.variables for r in rows), decayed=sum(r.decayed for r in rows),
            excluded=sum(r.excluded for r in rows), low_confidence=sum(r.low_confidence for r in rows),
            findings=sum(r.findings for r in rows), strict_problems=sum(r.strict_problems for r in rows),
        )


# --- discovery ---------------------------------------------------------------------------

def _is_saved_model_dir(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.stat(path / "saved_model.pb").st_mode)
    except OSError:
        return False


def _regular_file(path: Path) -> bool:
    """True for a regular file (through symlinks); never opens anything."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def looks_like_model(path: Path) -> bool:
    """A regular file whose first bytes one of the loaders' sniffers recognises."""
    from decay_audit.loaders import SNIFFERS

    if not _regular_file(path):
        return False
    try:
        with open(path, "rb") as handle:
            head = handle.read(_HEAD_BYTES)
    except OSError:
        return False
    return any(test(path, head) for _, test, _ in SNIFFERS)


def _walk(top: Path) -> Iterable[Path]:
    """Every model under ``top``, in sorted order; SavedModel directories count as one."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        directory = Path(dirpath)
        if _is_saved_model_dir(directory):
            dirnames[:] = []
            yield directory
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            candidate = directory / name
            if looks_like_model(candidate):
                yield candidate


@dataclass(frozen=True)
class Discovered:
    models: tuple[Path, ...]
    """Models found, in argument order then sorted within a directory, without duplicates."""
    missing: tuple[tuple[str, str], ...]
    """(argument, problem) for arguments that name nothing."""


def discover(arguments: Sequence[str | os.PathLike]) -> Discovered:
    """Expand files, directories (recursively) and globs (``**`` included) into model paths.

    A file named explicitly is kept even if no loader recognises it: the scan then says
    why, as it does for one MODEL. A glob is expanded here only when no file has that
    literal name (the shell normally expands it first)."""
    seen: set[Path] = set()
    models: list[Path] = []
    missing: list[tuple[str, str]] = []

    def add(path: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            models.append(path)

    def expand(path: Path, explicit: bool) -> None:
        if path.is_dir():
            if _is_saved_model_dir(path):
                add(path)
                return
            for found in _walk(path):
                add(found)
        elif explicit or looks_like_model(path):
            add(path)

    for argument in arguments:
        text = os.fspath(argument)
        path = Path(text)
        if os.path.lexists(path):
            expand(path, explicit=True)
        elif _GLOB_MAGIC & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                missing.append((text, "no file matches this pattern"))
            for match in matches:
                expand(Path(match), explicit=False)
        else:
            missing.append((text, "no such file or directory"))
    return Discovered(tuple(models), tuple(missing))


# --- reading -----------------------------------------------------------------------------

def _preload_loaders() -> None:
    """Import every loader before the first fork, so each child inherits them instead of
    importing h5py itself: the loaders import it lazily, on first use, and a forked child's
    import dies with it (measured: 280 ms of a tiny .keras file's 285 ms in the child)."""
    import h5py  # noqa: F401
    import decay_audit.loaders.h5_file  # noqa: F401
    import decay_audit.loaders.keras_zip  # noqa: F401
    import decay_audit.loaders.saved_model  # noqa: F401


def default_jobs() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS has no sched_getaffinity
        return max(1, os.cpu_count() or 1)


def scan_many(models: Sequence[str | os.PathLike], policy: Policy | Preset | str = Preset.KERNELS_ONLY,
              limits: Limits = DEFAULT_LIMITS, jobs: int | None = None,
              on_done: Callable[[BatchItem], None] | None = None) -> BatchReport:
    """Scan every model in ``models`` (paths as :func:`discover` returns them), up to ``jobs``
    readers at a time. A model that cannot be read becomes an item with an ``error``; the
    others are scanned regardless. ``on_done`` is called once per model, in order.

    In a process that has imported TensorFlow (a notebook, a test suite), forking is unsafe and
    each reader would be a fresh interpreter; the reads then go to ONE helper interpreter that
    forks the readers itself, so the sweep still costs one interpreter start, not one per model."""
    if not isinstance(policy, Policy):
        policy = Policy(Preset(policy))
    jobs = max(1, jobs or default_jobs())
    paths = [Path(m) for m in models]
    can_fork = hasattr(os, "fork") and limits.read_seconds > 0
    reads = _read_in_helper(paths, limits, jobs) if can_fork and "tensorflow" in sys.modules else \
        _read_all(paths, limits, jobs)
    items: list[BatchItem] = []
    for path, result in reads:
        if isinstance(result, DecayAuditError):
            item = BatchItem(str(path), None, str(result))
        else:
            item = BatchItem(str(path), scan_inventory(result, policy))
        items.append(item)
        if on_done is not None:
            on_done(item)
    return BatchReport(tuple(items))


def _read_all(paths: Sequence[Path], limits: Limits, jobs: int) -> Iterator[tuple[Path, Any]]:
    """(path, Inventory or the DecayAuditError that reading it raised), in order, ``jobs`` readers at a time."""
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


def _read_in_helper(paths: Sequence[Path], limits: Limits, jobs: int) -> Iterator[tuple[Path, Any]]:
    """The same reads, done by one fresh interpreter (``python -m decay_audit.batch``) that forks
    the bounded readers; results come back as the readers' own JSON, one line per model."""
    import dataclasses
    import json
    import subprocess

    from decay_audit.errors import ModelLoadError
    from decay_audit.loaders._isolate import _result

    request = json.dumps({"models": [str(p) for p in paths], "limits": dataclasses.asdict(limits), "jobs": jobs})
    package_root = str(Path(__file__).resolve().parents[1])  # importable however this process found it
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "decay_audit.batch"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
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
                yield path, _result(line, path, limits)
            except DecayAuditError as exc:
                yield path, exc
    finally:
        process.kill()
        process.wait()


def _helper_main() -> None:
    """``python -m decay_audit.batch``: read the models named on stdin, one JSON line each on stdout."""
    import json

    from decay_audit.loaders._isolate import _encode

    request = json.loads(sys.stdin.read())
    limits = Limits(**request["limits"])
    output = sys.stdout.buffer
    for _, result in _read_all([Path(m) for m in request["models"]], limits, request["jobs"]):
        if isinstance(result, DecayAuditError):
            line = json.dumps({"error": [type(result).__name__, result.subject, result.problem]}).encode()
        else:
            line = _encode(result)
        output.write(line + b"\n")
        output.flush()


def missing_items(discovered: Discovered) -> list[BatchItem]:
    return [BatchItem(argument, None, f"{argument}: {problem}") for argument, problem in discovered.missing]


if __name__ == "__main__":
    _helper_main()
