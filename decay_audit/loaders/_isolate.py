"""Read a model file in a child process: a hang or a memory blow-up in a C library is
the child's problem, reported as one line, never the caller's.

Fuzzing found HDF5 files whose corrupt attribute heap makes libhdf5 loop forever inside
one C call (h5py attribute read), where no Python signal can interrupt it. The child is
forked (no interpreter start-up, so a scan stays fast) when the process has not imported
TensorFlow, whose threads make fork unsafe; otherwise it is spawned. Its address space is
capped, and the parent waits at most ``read_seconds``.

The child sends back JSON, not pickles: nothing crossing the boundary is executable.

Not every platform has both pieces. Without ``os.fork`` (Windows) the file is read in this
process, on this thread: the declared-size checks every loader makes before reading still
hold, but there is no wall-clock limit, no address-space cap and no shelter from a crash in
libhdf5 (a thread could not be killed on a hang either, so none is started). Without a
working ``RLIMIT_AS`` (no ``resource`` module; macOS, whose kernel refuses or ignores it) the
child is still forked and timed, only uncapped. ``unenforced_limits()`` names what is missing.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import select
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import cast

from decay_audit.errors import DecayAuditError, LimitExceededError, ModelLoadError
from decay_audit.inventory import Inventory, OptimizerConfig, VariableRecord
from decay_audit.loaders.interface import Limits


def _optional_resource() -> ModuleType | None:
    """``resource`` is POSIX-only; its absence (Windows) costs the address-space cap, nothing else."""
    try:
        import resource
    except ImportError:
        return None
    return resource


_resource = _optional_resource()

NO_MEMORY_CAP = "the address-space cap (memory-mib)"
NO_TIME_LIMIT = "the wall-clock read limit (read-seconds)"
NO_CRASH_ISOLATION = "isolation from a crash or hang in libhdf5"


def can_fork() -> bool:
    """Whether a reader can be a forked child (checked per call, so a test can take fork away)."""
    return hasattr(os, "fork")


def _can_cap_memory() -> bool:
    """macOS has RLIMIT_AS but its kernel refuses it (ValueError) or ignores it: not tried there."""
    return _resource is not None and sys.platform != "darwin"


def unenforced_limits() -> tuple[str, ...]:
    """The bounds a file read on this platform goes without (empty on Linux)."""
    if not can_fork():
        return (NO_MEMORY_CAP, NO_TIME_LIMIT, NO_CRASH_ISOLATION)
    return () if _can_cap_memory() else (NO_MEMORY_CAP,)


def _cap_address_space(mib: int) -> bool:
    """Lower the soft RLIMIT_AS; False where the platform has no such limit or refuses it, so the
    read goes on uncapped instead of failing."""
    if _resource is None or not _can_cap_memory():
        return False
    try:
        _, hard = _resource.getrlimit(_resource.RLIMIT_AS)
        _resource.setrlimit(_resource.RLIMIT_AS, (mib << 20, hard))  # soft: see allow_tensorflow_import
    except (ValueError, OSError, AttributeError):
        return False
    return True


def _out_of_memory(limits: Limits, capped: bool) -> str:
    if capped:
        return f"reading needed more than {limits.max_memory_mib} MiB (raise it with --limit memory-mib=N)"
    return "reading ran out of memory (no address-space cap on this platform to stop it sooner)"


def _one_line(exc: BaseException) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    return f"unreadable ({type(exc).__name__}: {text})"


_RECORD_FIELDS = tuple(f.name for f in dataclasses.fields(VariableRecord))
_TUPLE_FIELDS = frozenset({"shape", "parent_classes", "graph_uses"})


def encode_inventory(inventory: Inventory) -> bytes:
    """Records as rows of field values (``dataclasses.asdict`` deep-copies, 5x slower here)."""
    optimizer = inventory.optimizer
    return json.dumps(
        {
            "ok": {
                "source": inventory.source,
                "loader": inventory.loader,
                "notes": list(inventory.notes),
                "model_name": inventory.model_name,
                "optimizer": None
                if optimizer is None
                else [optimizer.class_name, optimizer.weight_decay, optimizer.learning_rate, optimizer.config],
                "records": [[getattr(record, name) for name in _RECORD_FIELDS] for record in inventory.records],
            }
        },
        default=str,
    ).encode()


def _decode(payload: dict) -> Inventory:
    # Positional, with the list fields converted in place: a keyword dict per record cost
    # twice as much (6,000 variables: 47 ms).
    tuple_positions = [i for i, name in enumerate(_RECORD_FIELDS) if name in _TUPLE_FIELDS]
    records: list[VariableRecord] = []
    for row in payload["records"]:
        if len(row) != len(_RECORD_FIELDS):
            raise ValueError("reader sent a malformed record")
        for i in tuple_positions:
            row[i] = tuple(row[i])
        records.append(VariableRecord(*row))
    optimizer = OptimizerConfig(*payload["optimizer"]) if payload.get("optimizer") else None
    return Inventory(
        source=payload["source"],
        loader=payload["loader"],
        records=tuple(records),
        notes=tuple(payload["notes"]),
        model_name=payload.get("model_name"),
        optimizer=optimizer,
    )


def _child(loader: Callable[[Path, Limits], Inventory], path: Path, limits: Limits, write_fd: int) -> None:
    code = 0
    # The child lives for one read under a memory cap, and a config parses into hundreds of
    # thousands of containers: the cyclic collector only re-scans them (a 6,000-variable model's
    # read spent about a third of its time in it, CPython 3.11). Reference counting still frees.
    gc.disable()
    capped = False
    try:
        capped = _cap_address_space(limits.max_memory_mib)
        payload = encode_inventory(loader(path, limits))
    except DecayAuditError as exc:
        payload = json.dumps({"error": [type(exc).__name__, exc.subject, exc.problem]}).encode()
    except MemoryError:
        payload = json.dumps({"error": ["LimitExceededError", str(path), _out_of_memory(limits, capped)]}).encode()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent as one line
        payload = json.dumps({"error": ["ModelLoadError", str(path), _one_line(exc)]}).encode()
        code = 1
    view = memoryview(payload)
    while view:
        written = os.write(write_fd, view)
        view = view[written:]
    os.close(write_fd)
    os._exit(code)


TENSORFLOW_IMPORT_MIB = 4096


def allow_tensorflow_import() -> None:
    """Importing TensorFlow maps about 1.5 GiB of address space, more than a reader needs
    (ConvNeXtBase: 48 MiB). The one reader path that imports it (building a public Keras
    layer class to learn its variable order) raises the soft cap for that import only;
    parsing the file itself stays under ``memory-mib``."""
    if _resource is None:
        return
    try:
        soft, hard = _resource.getrlimit(_resource.RLIMIT_AS)
        wanted = TENSORFLOW_IMPORT_MIB << 20
        if soft != _resource.RLIM_INFINITY and soft < wanted:
            infinite = hard == _resource.RLIM_INFINITY
            _resource.setrlimit(_resource.RLIMIT_AS, (wanted if infinite else min(wanted, hard), hard))
    except (ValueError, OSError, AttributeError):
        return


_ERRORS = {"LimitExceededError": LimitExceededError, "ModelLoadError": ModelLoadError}


class PendingLoad:
    """A read under way in a child process; ``result()`` waits for it (or raises its error).

    Starting the child first and waiting later lets the caller import what it needs for the
    next stages while the child reads: on two cores that overlaps the two start-ups.
    """

    def __init__(
        self,
        path: Path,
        limits: Limits,
        pid: int | None = None,
        read_fd: int | None = None,
        done: Callable[[], Inventory] | None = None,
    ):
        self.path, self.limits, self.pid, self.read_fd, self._done = path, limits, pid, read_fd, done

    def result(self) -> Inventory:
        if self._done is not None:
            return self._done()
        # Without ``done`` the child's pid and pipe were given (start_isolated); not narrowed with an
        # assert, so a result() after cancel() fails as it did before.
        return _collect(cast(int, self.pid), cast(int, self.read_fd), self.path, self.limits)

    def cancel(self) -> None:
        if self.pid is not None and self.read_fd is not None:
            os.kill(self.pid, signal.SIGKILL)
            os.close(self.read_fd)
            os.waitpid(self.pid, 0)
            self.read_fd = None


def start_isolated(loader: Callable[[Path, Limits], Inventory], path: Path, limits: Limits) -> PendingLoad:
    """A forked reader where the platform can fork; else an in-process read (see the module doc).
    ``read-seconds=0`` also reads in-process, raising what the loader raises (the fuzzers rely on it)."""
    if limits.read_seconds <= 0:
        return PendingLoad(path, limits, done=lambda: loader(path, limits))
    if not can_fork():
        return PendingLoad(path, limits, done=lambda: read_in_process(loader, path, limits))
    if "tensorflow" in sys.modules:
        return PendingLoad(path, limits, done=lambda: _load_spawned(loader, path, limits))
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _child(loader, path, limits, write_fd)
    os.close(write_fd)
    return PendingLoad(path, limits, pid, read_fd)


def read_in_process(loader: Callable[[Path, Limits], Inventory], path: Path, limits: Limits) -> Inventory:
    """The read a forked child would do, here: every failure is the same one-line error the child
    would send. No thread: a read that hangs inside libhdf5 could not be stopped from one anyway."""
    collecting = gc.isenabled()
    gc.disable()  # as in the child; restored, since this process goes on after the read
    try:
        return loader(path, limits)
    except DecayAuditError:
        raise
    except MemoryError:
        raise LimitExceededError(str(path), _out_of_memory(limits, capped=False)) from None
    except Exception as exc:  # noqa: BLE001 - one line, as the child would report it
        raise ModelLoadError(str(path), _one_line(exc)) from None
    finally:
        if collecting:
            gc.enable()


def load_isolated(loader: Callable[[Path, Limits], Inventory], path: Path, limits: Limits) -> Inventory:
    return start_isolated(loader, path, limits).result()


def _collect(pid: int, read_fd: int, path: Path, limits: Limits) -> Inventory:
    chunks, deadline = [], time.monotonic() + limits.read_seconds
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                os.kill(pid, signal.SIGKILL)
                raise LimitExceededError(
                    str(path),
                    f"reading took longer than {limits.read_seconds} s "
                    "(a corrupt file?); raise it with --limit read-seconds=N",
                )
            ready, _, _ = select.select([read_fd], [], [], min(remaining, 0.5))
            if ready:
                chunk = os.read(read_fd, 1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_fd)
        os.waitpid(pid, 0)
    return inventory_from_reply(b"".join(chunks), path, limits)


def inventory_from_reply(data: bytes, path: Path, limits: Limits) -> Inventory:
    """The inventory a reader sent back, or the error it reported, raised here in the parent."""
    if not data:
        raise ModelLoadError(
            str(path),
            f"the reader died (memory over {limits.max_memory_mib} MiB, or a crash in "
            "a C library); raise memory with --limit memory-mib=N",
        )
    message = json.loads(data)
    if "error" in message:
        kind, subject, problem = message["error"]
        raise _ERRORS.get(kind, ModelLoadError)(subject, problem)
    return _decode(message["ok"])


def _spawned_entry(loader_name: str, path: str, limits_json: str, write_fd: int) -> None:
    """The spawned reader's entry: the loader travels by qualified name (``module:function``), as
    multiprocessing sends functions, so this module never imports the loaders that import it."""
    import importlib

    module_name, _, function_name = loader_name.partition(":")
    limits = Limits(**json.loads(limits_json))
    _child(getattr(importlib.import_module(module_name), function_name), Path(path), limits, write_fd)


def _load_spawned(loader: Callable[[Path, Limits], Inventory], path: Path, limits: Limits) -> Inventory:
    """For processes that imported TensorFlow: a fresh interpreter instead of fork."""
    import subprocess

    read_fd, write_fd = os.pipe()
    code = (
        "import sys; from decay_audit.loaders._isolate import _spawned_entry; "
        "_spawned_entry(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))"
    )
    process = subprocess.Popen(
        [
            sys.executable,
            "-c",
            code,
            f"{loader.__module__}:{loader.__qualname__}",
            str(path),
            json.dumps(dataclasses.asdict(limits)),
            str(write_fd),
        ],
        pass_fds=(write_fd,),
        stdin=subprocess.DEVNULL,
    )
    os.close(write_fd)
    return _collect(process.pid, read_fd, path, limits)
