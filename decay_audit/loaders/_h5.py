"""Opening HDF5 safely: read-only, no file locking, every failure one line."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from decay_audit.errors import ModelLoadError


@contextlib.contextmanager
def open_h5(source: Any, subject: str) -> Iterator[Any]:
    """Yield an open ``h5py.File``; close it before the file object under it.

    ``locking=False``: HDF5's file lock would otherwise make a concurrent writer
    (a training job checkpointing) fail, and the brief says never lock the input.
    Closing order matters: letting h5py and its file object die together at exit
    crashed the interpreter (shared FACTS).
    """
    import h5py

    try:
        handle = h5py.File(source, "r", locking=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(subject, f"not a readable HDF5 file ({_first_line(exc)})") from None
    try:
        try:
            yield handle
        except (OSError, RuntimeError, KeyError, TypeError) as exc:
            # h5py raises these for corrupt b-trees and bad object headers mid-walk.
            raise ModelLoadError(subject, f"corrupt HDF5 index ({_first_line(exc)})") from None
    finally:
        with contextlib.suppress(Exception):
            handle.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def attr_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return None
