"""Which models a list of paths names: files, directories (recursively) and globs.

Discovery keeps what a scan can read: regular files whose first bytes a loader recognises,
and SavedModel and keras_hub preset directories (one model each, never entered). A sharded
checkpoint is one model, found through its index: the shards beside the index are its parts,
not models of their own. Special files (FIFOs, devices,
sockets) are never opened: opening a FIFO blocks, a device may never end. Hidden directories
(``.git``, ``.venv``) are not entered unless named.
"""

from __future__ import annotations

import glob
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from decay_audit.loaders import PRESET_WEIGHTS_FILES, sniff
from decay_audit.loaders._shard_names import index_beside

_GLOB_MAGIC = frozenset("*?[")


@dataclass(frozen=True)
class Discovered:
    """The models a list of arguments names, and the arguments that name nothing."""

    models: tuple[Path, ...]
    """Models found, in argument order then sorted within a directory, without duplicates."""
    missing: tuple[tuple[str, str], ...]
    """(argument, problem) for arguments that name nothing."""


def is_glob(text: str) -> bool:
    """Whether an argument holds glob characters (the shell normally expands them first)."""
    return bool(_GLOB_MAGIC & set(text))


def is_saved_model_dir(path: Path) -> bool:
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


def is_preset_dir(path: Path) -> bool:
    """A keras_hub ``save_to_preset`` directory (or Keras' unzipped model): config.json beside the
    backbone's weights, plain or sharded. Scanned whole, as ``from_preset`` loads it."""
    return _regular_file(path / "config.json") and any(_regular_file(path / name) for name in PRESET_WEIGHTS_FILES)


def looks_like_model(path: Path) -> bool:
    """A regular file whose first bytes one of the loaders' sniffers recognises, and not a shard
    whose index is beside it (the index stands for the whole checkpoint)."""
    return _regular_file(path) and index_beside(path) is None and sniff(path) is not None


def _walk(top: Path) -> Iterable[Path]:
    """Every model under ``top``, in sorted order; SavedModel and preset directories count as one."""
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        directory = Path(dirpath)
        if is_saved_model_dir(directory) or is_preset_dir(directory):
            dirnames[:] = []
            yield directory
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            candidate = directory / name
            if looks_like_model(candidate):
                yield candidate


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
            if is_saved_model_dir(path):
                add(path)
                return
            for found in _walk(path):
                add(found)
        elif _regular_file(path) and index_beside(path) is not None:
            add(_whole_checkpoint(path))  # naming every shard (``ckpt/*.h5``) scans the model once
        elif explicit or looks_like_model(path):
            add(path)

    for argument in arguments:
        text = os.fspath(argument)
        path = Path(text)
        if os.path.lexists(path):
            expand(path, explicit=True)
        elif is_glob(text):
            matches = sorted(glob.glob(text, recursive=True))
            if not matches:
                missing.append((text, "no file matches this pattern"))
            for match in matches:
                expand(Path(match), explicit=False)
        else:
            missing.append((text, "no such file or directory"))
    return Discovered(tuple(models), tuple(missing))


def _whole_checkpoint(shard: Path) -> Path:
    """What a shard named on the command line stands for: its preset directory, else its index."""
    index = index_beside(shard)
    assert index is not None  # the one caller checks it
    if index.name == PRESET_WEIGHTS_FILES[1] and is_preset_dir(index.parent):
        return index.parent
    return index


def single_model(arguments: Sequence[Path]) -> Path | None:
    """The one model a single-model scan reads, or None when the arguments ask for a multi-model scan.

    One argument stays a single-model scan unless it is a directory that holds several models,
    or a glob: one model keeps its detailed report, several get one summary row each."""
    if len(arguments) != 1:
        return None
    path = arguments[0]
    if not os.path.lexists(path):
        return None if is_glob(str(path)) else path
    if path.is_dir() and not (path / "saved_model.pb").is_file() and not is_preset_dir(path):
        found = discover([path]).models
        if len(found) == 1:
            return found[0]
        return None if found else path  # none: the single-model error names the directory
    return path
