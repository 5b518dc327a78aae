"""Loaders, chosen by sniffing content, never by file extension.

The registry is one table (``SNIFFERS``): adding a format is one module plus one line.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from decay_audit.errors import ModelLoadError
from decay_audit.inventory import Inventory
from decay_audit.loaders._isolate import PendingLoad, start_isolated
from decay_audit.loaders.interface import DEFAULT_LIMITS, Limits, LoaderName

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
HF_WEIGHTS_FILE = "tf_model.h5"  # transformers' TF2_WEIGHTS_NAME (4.49)
HF_CONFIG_FILE = "config.json"


def _load_zip(path: Path, limits: Limits) -> Inventory:
    from decay_audit.loaders.keras_zip import load_keras_zip

    return load_keras_zip(path, limits)


def _load_h5(path: Path, limits: Limits) -> Inventory:
    from decay_audit.loaders.h5_file import load_h5

    return load_h5(path, limits)


def _load_saved_model(path: Path, limits: Limits) -> Inventory:
    from decay_audit.loaders.saved_model import load_saved_model

    return load_saved_model(path, limits)


def _is_zip(path: Path, head: bytes) -> bool:
    return head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC))


def _is_hdf5(path: Path, head: bytes) -> bool:
    # HDF5 allows a user block: the signature may sit at 0, 512, 1024, ... (checked up to 4 KiB).
    return any(head[offset : offset + 8] == HDF5_MAGIC for offset in (0, 512, 1024, 2048))


SNIFFERS: tuple[tuple[str, Callable[[Path, bytes], bool], Callable[[Path, Limits], Inventory]], ...] = (
    ("Keras 3 .keras zip", _is_zip, _load_zip),
    ("HDF5 (.h5 / .weights.h5)", _is_hdf5, _load_h5),
)
"""(description, test on the first bytes of a file, loader). SavedModel is a directory, see below."""


HEAD_BYTES = 4096

_SPECIAL_KINDS = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def special_kind(mode: int) -> str | None:
    """What a non-regular, non-directory file is, in words; None for regular files and directories."""
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    return next((words for test, words in _SPECIAL_KINDS if test(mode)), "not a regular file")


def _refuse_special(subject: str, kind: str) -> ModelLoadError:
    return ModelLoadError(
        subject,
        f"is {kind}, not a model file: give a regular file or a directory "
        "(copy a piped or streamed model to a file first)",
    )


def _stat(path: Path, subject: str) -> os.stat_result:
    try:
        return os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ModelLoadError(subject, "symbolic link loop") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise ModelLoadError(subject, "no such file or directory") from None
        raise ModelLoadError(subject, f"cannot read ({exc.strerror or exc})") from None


def read_head(path: Path, subject: str) -> bytes:
    """The first bytes of a regular file, without ever blocking.

    ``open()`` on a named pipe blocks until a writer appears (forever, for ``mkfifo m.keras``),
    and a read from a terminal or a pipe blocks until input comes. So the file is opened
    O_NONBLOCK and fstat-ed through that descriptor: a file swapped for a pipe between the
    caller's stat and this open is refused too, never waited on.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except OSError as exc:
        raise ModelLoadError(subject, f"cannot read ({exc.strerror or exc})") from None
    try:
        kind = special_kind(os.fstat(descriptor).st_mode)
        if kind is not None:
            raise _refuse_special(subject, kind)
        chunks, size = [], 0
        while size < HEAD_BYTES:
            chunk = os.read(descriptor, HEAD_BYTES - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise ModelLoadError(subject, f"cannot read ({exc.strerror or exc})") from None
    finally:
        os.close(descriptor)


def _is_regular(path: Path) -> bool:
    """stat only, never open: special files in a scanned directory are skipped unopened."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _model_files_in(directory: Path) -> list[Path]:
    found = []
    for child in sorted(directory.iterdir()):
        if child.is_dir() and _is_regular(child / "saved_model.pb"):
            found.append(child)
        elif _is_regular(child) and sniff(child) is not None:
            found.append(child)
    return found


def sniff(path: Path) -> Callable[[Path, Limits], Inventory] | None:
    """The loader whose sniffer recognises the file's first bytes; None for anything else
    (unreadable, special or not a model). Never blocks, never raises."""
    try:
        head = read_head(path, str(path))
    except ModelLoadError:
        return None
    for _, test, loader in SNIFFERS:
        if test(path, head):
            return loader
    return None


def load(source: Any, limits: Limits = DEFAULT_LIMITS) -> Inventory:
    """Inventory of a model file, a SavedModel directory, a directory holding one model, or a live model."""
    return start_load(source, limits).result()


def start_load(source: Any, limits: Limits = DEFAULT_LIMITS) -> PendingLoad:
    """Start reading; files are read in a bounded child process (see loaders._isolate)."""
    if not isinstance(source, (str, Path)):
        from decay_audit.loaders.live import load_live

        return PendingLoad(Path("."), limits, done=lambda: load_live(source))
    path = Path(source)
    subject = str(path)
    mode = _stat(path, subject).st_mode
    if stat.S_ISDIR(mode):
        graph = path / "saved_model.pb"
        if os.path.lexists(graph):
            graph_kind = special_kind(_stat(graph, str(graph)).st_mode)
            if graph_kind is not None:
                raise _refuse_special(str(graph), graph_kind)
            if stat.S_ISREG(os.stat(graph).st_mode):
                return start_isolated(_load_saved_model, path, limits)
        weights, config = path / HF_WEIGHTS_FILE, path / HF_CONFIG_FILE
        if weights.is_file() and config.is_file():  # is_file() is False for pipes and devices
            # A Hugging Face ``save_pretrained`` directory: its TF weights are the model, whatever
            # PyTorch/safetensors files sit beside them.
            return start_load(weights, limits)
        candidates = _model_files_in(path)
        if len(candidates) != 1:
            found = ", ".join(c.name for c in candidates) or "none"
            raise ModelLoadError(subject, f"directory must hold exactly one model, found {len(candidates)} ({found})")
        return start_load(candidates[0], limits)
    kind = special_kind(mode)
    if kind is not None:
        raise _refuse_special(subject, kind)
    head = read_head(path, subject)
    if path.name == "saved_model.pb":
        return start_isolated(_load_saved_model, path.parent, limits)
    for _, test, loader in SNIFFERS:
        if test(path, head):
            return start_isolated(loader, path, limits)
    if not head:
        raise ModelLoadError(subject, "empty file")
    kinds = ", ".join(description for description, _, _ in SNIFFERS)
    raise ModelLoadError(subject, f"not a recognised model format (expected {kinds}, or a SavedModel directory)")


__all__ = ["DEFAULT_LIMITS", "Limits", "LoaderName", "PendingLoad", "load", "start_load"]
