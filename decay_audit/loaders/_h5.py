"""Opening HDF5 safely: read-only, no file locking, every failure one line."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any

from decay_audit.errors import ModelLoadError
from decay_audit.loaders._h5header import CorruptHeap, DeclaredTooLong, HeaderReader, header_reader


@contextlib.contextmanager
def open_h5(source: Any, subject: str, small_in_memory: bool = True) -> Iterator[Any]:
    """Yield an open ``h5py.File``; close it before the file object under it.

    ``small_in_memory=False`` reads even a small file where it is: the shards of a sharded
    checkpoint hold mostly tensor data, and copying each one whole cost more than its index walk.

    ``locking=False``: HDF5's file lock would otherwise make a concurrent writer
    (a training job checkpointing) fail, and the brief says never lock the input.
    Closing order matters: letting h5py and its file object die together at exit
    crashed the interpreter (shared FACTS).
    """
    import h5py

    try:
        image = _small_member_image(source) if small_in_memory else None
        if image is not None:
            handle = h5py.File(_open_image(h5py, image), "r")
        else:
            handle = h5py.File(source, "r", locking=False)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(subject, f"not a readable HDF5 file ({_first_line(exc)})") from None
    try:
        handle.decay_audit_headers = _headers(source, image, handle.id.get_create_plist().get_userblock())
    except (OSError, ValueError, RuntimeError):
        handle.decay_audit_headers = None
    try:
        try:
            yield handle
        except (OSError, RuntimeError, KeyError, TypeError, ValueError, CorruptHeap, DeclaredTooLong) as exc:
            # h5py raises these for corrupt b-trees and bad object headers mid-walk; ValueError
            # includes h5o.visit's UnicodeDecodeError on a corrupt link name (h5py 3.14, fuzzing).
            raise ModelLoadError(subject, f"corrupt HDF5 index ({_first_line(exc)})") from None
    finally:
        with contextlib.suppress(Exception):
            handle.close()


def headers_of(h5: Any) -> HeaderReader | None:
    """The object-header reader ``open_h5`` made for this file (None: libhdf5 answers everything)."""
    return getattr(h5, "decay_audit_headers", None)


def root_text(h5: Any, name: str, max_length: int) -> str | None:
    """A string attribute of the file's root group (``model_config``). Through the header reader
    its declared length is known before anything is read (raises ``DeclaredTooLong``), and
    libhdf5, which fuzzing made loop inside such reads, is not involved."""
    import h5py

    headers = headers_of(h5)
    if headers is not None:
        known, text = headers.string_attribute(h5py.h5o.get_info(h5.id).addr, name.encode(), max_length)
        if known:
            return text
    return attr_text(h5.attrs.get(name))


def attribute_texts(h5: Any, obj: Any, name: str) -> Sequence[str | None] | None:
    """A 1-D string array attribute (legacy ``layer_names``, ``weight_names``) of ``obj``, a group of
    the open file ``h5``: through the header reader where it can tell (fuzzing made libhdf5 loop
    in these reads too), else through h5py."""
    import h5py

    headers = headers_of(h5)
    if headers is not None:
        known, texts = headers.string_list_attribute(h5py.h5o.get_info(obj.id).addr, name.encode())
        if known:
            return texts
    value = obj.attrs.get(name)
    return None if value is None else [attr_text(item) for item in value]


def _headers(source: Any, image: bytes | None, base: int) -> HeaderReader | None:
    """A reader on the bytes libhdf5 reads: the in-memory image, a window of a zip on disk, or a
    plain file (by ``os.pread``, which leaves the file position to libhdf5). A compressed zip
    member, streamed, gets none."""
    from decay_audit.loaders._zipwindow import MemberWindow

    if image is not None:
        return header_reader(lambda offset, size: image[base + offset : base + offset + size])
    if isinstance(source, MemberWindow):
        descriptor, start, end = source.raw_fileno(), source.start, source.start + source.size
    elif hasattr(source, "fileno") and hasattr(source, "seekable"):
        descriptor, start, end = source.fileno(), 0, None
    else:
        return None

    def read(offset: int, size: int) -> bytes:
        at = start + base + offset
        if end is not None:
            size = max(0, min(size, end - at))
        if at >= _PAST_ANY_FILE or size <= 0:  # an address beyond off_t: nothing there
            return b""
        return os.pread(descriptor, size, at)

    return header_reader(read)


_PAST_ANY_FILE = 1 << 62

IMAGE_BYTES = 32 << 20
"""A zip member up to this size is read into memory and opened as an HDF5 file image."""


def _small_member_image(source: Any) -> bytes | None:
    """The bytes of an in-memory file, a small zip member window or a small file; None otherwise.

    h5py reads a Python file object through one Python callback per libhdf5 read: a
    .keras holding 6,000 variables made 66,000 of them (0.2 s of a 0.45 s index walk,
    h5py 3.14 / HDF5 1.14.6). From memory the same walk costs half. Large members and
    files stay where they are, so a multi-GiB weights file is never copied.
    """
    from decay_audit.loaders._zipwindow import MemberWindow

    if isinstance(source, bytes):
        return source
    if isinstance(source, MemberWindow):
        size = source.size
    elif hasattr(source, "fileno") and hasattr(source, "seekable"):
        try:
            size = os.fstat(source.fileno()).st_size
        except (OSError, ValueError):
            return None
    else:
        return None
    if size > IMAGE_BYTES:
        return None
    source.seek(0)
    data = source.read(size + 1)  # one more: a file that grew since fstat is read where it is
    source.seek(0)
    return data if len(data) == size else None


def _open_image(h5py: Any, image: bytes) -> Any:
    access = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    access.set_fapl_core(backing_store=False)
    access.set_file_image(image)
    return h5py.h5f.open(b"model.weights.h5", h5py.h5f.ACC_RDONLY, fapl=access)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def attr_text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, str):
        return value
    return None
