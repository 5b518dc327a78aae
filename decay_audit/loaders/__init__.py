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
from decay_audit.loaders._shard_names import HF_INDEX_NAME, hf_shard_position, index_beside, is_shard_index, refusal
from decay_audit.loaders.interface import DEFAULT_LIMITS, Limits, LoaderName

ZIP_MAGIC = b"PK\x03\x04"
EMPTY_ZIP_MAGIC = b"PK\x05\x06"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
HF_WEIGHTS_FILE = "tf_model.h5"  # transformers' TF2_WEIGHTS_NAME (4.49)
HF_CONFIG_FILE = "config.json"
PRESET_WEIGHTS_FILES = ("model.weights.h5", "model.weights.json")  # keras_hub preset_utils (0.32)


def _load_zip(path: Path, limits: Limits) -> Inventory:
    from decay_audit.loaders.keras_zip import load_keras_zip

    return load_keras_zip(path, limits)


def _load_h5(path: Path, limits: Limits) -> Inventory:
    from decay_audit.loaders.h5_file import load_h5

    return load_h5(path, limits)


def _load_saved_model(path: Path, limits: Limits) -> Inventory:
    from decay_audit.loaders.saved_model import load_saved_model

    return load_saved_model(path, limits)


def _load_sharded(path: Path, limits: Limits) -> Inventory:
    """A sharded checkpoint through its index. The index of a keras_hub preset's backbone
    (``model.weights.json`` beside ``config.json``) is read as the preset, the model it belongs to."""
    from decay_audit.loaders.h5_file import load_hf_shards
    from decay_audit.loaders.sharded import load_keras_index, read_index

    index = read_index(path, limits)
    if not index.keras:
        return load_hf_shards(index, limits, str(path))
    if path.name == PRESET_WEIGHTS_FILES[1] and _is_preset(path.parent):
        return _part_of_preset(path, f"{path.name} is the sharded backbone weights index", limits)
    return load_keras_index(index, limits, str(path))


def _load_shard(path: Path, limits: Limits) -> Inventory:
    """One shard given alone, its index beside it: the whole checkpoint, since a shard is no model."""
    from decay_audit.loaders.h5_file import load_hf_shards
    from decay_audit.loaders.sharded import load_keras_index, read_index

    subject = str(path)
    index_path = index_beside(path)
    if index_path is None:
        raise ModelLoadError(subject, refusal(path))
    index = read_index(index_path, limits)
    if path.name not in index.shards:
        return _load_h5(path, limits)  # only named like a shard (``ckpt_00010.weights.h5``, an epoch's weights)
    part = f"{path.name} is one shard of {len(index.shards)} of a sharded checkpoint"
    if index.keras and index_path.name == PRESET_WEIGHTS_FILES[1] and _is_preset(path.parent):
        return _part_of_preset(path, part, limits)
    if index.keras:
        inventory = load_keras_index(index, limits, subject)
    else:
        inventory = load_hf_shards(index, limits, subject)
    note = f"{part}: read the whole checkpoint its index {index_path.name} describes (one shard alone is not a model)"
    return _with_first_note(inventory, note)


def _part_of_preset(path: Path, part: str, limits: Limits) -> Inventory:
    from decay_audit.loaders.preset import load_preset

    inventory = load_preset(path.parent, limits)
    note = f"{part} of the keras_hub preset {path.parent}: read the whole preset, the model it belongs to"
    return _with_first_note(inventory, note, source=str(path))


def _with_first_note(inventory: Inventory, note: str, source: str | None = None) -> Inventory:
    import dataclasses

    return dataclasses.replace(
        inventory, notes=(note, *inventory.notes), source=source if source is not None else inventory.source
    )


def _load_preset(path: Path, limits: Limits) -> Inventory:
    from decay_audit.loaders.preset import load_preset

    return load_preset(path, limits)


def _is_preset(directory: Path) -> bool:
    """``save_to_preset`` (or Keras' unzipped model) directory: config.json and backbone weights; stat only."""
    return _is_regular(directory / HF_CONFIG_FILE) and any(_is_regular(directory / f) for f in PRESET_WEIGHTS_FILES)


def _is_zip(path: Path, head: bytes) -> bool:
    return head.startswith((ZIP_MAGIC, EMPTY_ZIP_MAGIC))


def _is_hdf5(path: Path, head: bytes) -> bool:
    # HDF5 allows a user block: the signature may sit at 0, 512, 1024, ... (checked up to 4 KiB).
    return any(head[offset : offset + 8] == HDF5_MAGIC for offset in (0, 512, 1024, 2048))


SNIFFERS: tuple[tuple[str, Callable[[Path, bytes], bool], Callable[[Path, Limits], Inventory]], ...] = (
    ("Keras 3 .keras zip", _is_zip, _load_zip),
    ("HDF5 (.h5 / .weights.h5)", _is_hdf5, _load_h5),
    ("sharded checkpoint index (.weights.json, tf_model.h5.index.json)", is_shard_index, _load_sharded),
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
    """Models directly in ``directory``: a shard whose index is beside it is part of that index's model."""
    found = []
    for child in sorted(directory.iterdir()):
        if child.is_dir() and (_is_regular(child / "saved_model.pb") or _is_preset(child)):
            found.append(child)
        elif _is_regular(child) and index_beside(child) is None and sniff(child) is not None:
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
        if (path / HF_INDEX_NAME).is_file() and config.is_file():
            return start_load(path / HF_INDEX_NAME, limits)  # the same, saved with max_shard_size
        if _is_preset(path):
            return start_isolated(_load_preset, path, limits)
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
    if _is_hdf5(path, head):
        if index_beside(path) is not None:
            return start_isolated(_load_shard, path, limits)
        if hf_shard_position(path.name) is not None:
            raise ModelLoadError(subject, refusal(path))
    for _, test, loader in SNIFFERS:
        if test(path, head):
            return start_isolated(loader, path, limits)
    if not head:
        raise ModelLoadError(subject, "empty file")
    kinds = ", ".join(description for description, _, _ in SNIFFERS)
    raise ModelLoadError(
        subject,
        f"not a recognised model format (expected {kinds}, a SavedModel directory or a keras_hub preset directory)",
    )


__all__ = ["DEFAULT_LIMITS", "Limits", "LoaderName", "PendingLoad", "load", "start_load"]
