"""Loaders, chosen by sniffing content, never by file extension.

The registry is one table (``SNIFFERS``): adding a format is one module plus one line.
"""

from __future__ import annotations

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
HF_WEIGHTS_FILE = "tf_model.h5"   # transformers' TF2_WEIGHTS_NAME (4.49)
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
    return any(head[offset:offset + 8] == HDF5_MAGIC for offset in (0, 512, 1024, 2048))


SNIFFERS: tuple[tuple[str, Callable[[Path, bytes], bool], Callable[[Path, Limits], Inventory]], ...] = (
    ("Keras 3 .keras zip", _is_zip, _load_zip),
    ("HDF5 (.h5 / .weights.h5)", _is_hdf5, _load_h5),
)
"""(description, test on the first bytes of a file, loader). SavedModel is a directory, see below."""


def _model_files_in(directory: Path) -> list[Path]:
    found = []
    for child in sorted(directory.iterdir()):
        if child.is_dir() and (child / "saved_model.pb").is_file():
            found.append(child)
        elif child.is_file() and _sniff_file(child) is not None:
            found.append(child)
    return found


def _sniff_file(path: Path) -> Callable[[Path, Limits], Inventory] | None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError:
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
    if not path.exists():
        raise ModelLoadError(subject, "no such file or directory")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return start_isolated(_load_saved_model, path, limits)
        if (path / HF_WEIGHTS_FILE).is_file() and (path / HF_CONFIG_FILE).is_file():
            # A Hugging Face ``save_pretrained`` directory: its TF weights are the model, whatever
            # PyTorch/safetensors files sit beside them.
            return start_load(path / HF_WEIGHTS_FILE, limits)
        candidates = _model_files_in(path)
        if len(candidates) != 1:
            found = ", ".join(c.name for c in candidates) or "none"
            raise ModelLoadError(subject, f"directory must hold exactly one model, found {len(candidates)} ({found})")
        return start_load(candidates[0], limits)
    try:
        with open(path, "rb") as handle:
            head = handle.read(4096)
    except OSError as exc:
        raise ModelLoadError(subject, f"cannot read ({exc.strerror or exc})") from None
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
