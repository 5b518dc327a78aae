"""Loader for Keras 3 ``.keras`` archives: config.json + the index of model.weights.h5.

No tensor is read and nothing from the file is executed: the config is plain JSON and
layer classes are looked up in a table (decay_audit.knowledge), never imported.
"""

from __future__ import annotations

import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from decay_audit.errors import ModelLoadError
from decay_audit.inventory import Inventory
from decay_audit.knowledge.keras_hub import class_for_entry, is_hub_entry, keras_hub_version
from decay_audit.loaders._compile_config import optimizer_from_compile_config
from decay_audit.loaders._h5 import IMAGE_BYTES, open_h5
from decay_audit.loaders._keras_config import is_builtin_entry
from decay_audit.loaders._keras_tree import KerasTreeWalker
from decay_audit.loaders._zipwindow import stored_member_window
from decay_audit.loaders.interface import Limits, LoaderName, parse_json

CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"


def load_keras_zip(path: Path, limits: Limits) -> Inventory:
    subject = str(path)
    with open(path, "rb") as raw:
        try:
            archive = zipfile.ZipFile(raw)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as exc:
            # NotImplementedError: "zip file version 8.0" for a directory needing a newer unzip (fuzzing)
            raise ModelLoadError(subject, f"not a readable zip archive ({exc})") from None
        with archive:
            members = {info.filename: info for info in archive.infolist()}
            if CONFIG_MEMBER not in members:
                raise ModelLoadError(subject, f"zip has no {CONFIG_MEMBER}: not a Keras 3 .keras file")
            config_info = members[CONFIG_MEMBER]
            limits.check("max_config_bytes", config_info.file_size, f"{subject}:{CONFIG_MEMBER}")
            try:
                config_bytes = archive.read(CONFIG_MEMBER)
            except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError, RuntimeError) as exc:
                # RuntimeError: an encrypted member (zipfile, Python 3.11; found by fuzzing)
                raise ModelLoadError(subject, f"cannot read {CONFIG_MEMBER} ({exc})") from None
            model_entry = parse_json(config_bytes, f"{subject}:{CONFIG_MEMBER}", limits)
            if not isinstance(model_entry, Mapping) or "class_name" not in model_entry:
                raise ModelLoadError(subject, f"{CONFIG_MEMBER} is not a Keras model config")
            if WEIGHTS_MEMBER not in members:
                raise ModelLoadError(subject, f"zip has no {WEIGHTS_MEMBER}")
            weights_info = members[WEIGHTS_MEMBER]
            try:
                window = stored_member_window(raw, weights_info)
            except zipfile.BadZipFile as exc:
                raise ModelLoadError(subject, str(exc)) from None
            notes: list[str] = []
            if window is None:
                source = _compressed_member(archive, weights_info, subject, notes)
            else:
                source = window
            walker = KerasTreeWalker(f"{subject}:{WEIGHTS_MEMBER}", limits)
            with open_h5(source, f"{subject}:{WEIGHTS_MEMBER}") as h5:
                records = walker.walk_model(h5, model_entry)
            if not isinstance(source, bytes):
                source.close()
    notes.extend(walker.notes)
    notes.extend(_unknown_class_notes(model_entry))
    raw_config = model_entry.get("config")
    config: Mapping[str, Any] = raw_config if isinstance(raw_config, Mapping) else {}
    return Inventory(
        source=subject,
        loader=LoaderName.KERAS_ZIP.value,
        records=tuple(records),
        notes=tuple(notes),
        model_name=config.get("name") if isinstance(config.get("name"), str) else None,
        optimizer=optimizer_from_compile_config(model_entry.get("compile_config")),
    )


def _compressed_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, subject: str, notes: list[str]) -> Any:
    """A compressed ``model.weights.h5`` (re-zipped by hand), which cannot be seeked in place.

    Up to IMAGE_BYTES it is decompressed once into memory (reading at most one byte more than it
    declares): libhdf5 seeks back and forth, and each backward seek in a zip stream decompresses
    from the start again. A larger member is streamed, slower, bounded by read-seconds."""
    try:
        member = archive.open(WEIGHTS_MEMBER)
    except (zipfile.BadZipFile, OSError, NotImplementedError, RuntimeError) as exc:
        raise ModelLoadError(subject, f"cannot open {WEIGHTS_MEMBER} ({exc})") from None
    if info.file_size > IMAGE_BYTES:
        notes.append(f"{WEIGHTS_MEMBER} is compressed: read by streaming, which is slower")
        return member
    with member:
        try:
            data = member.read(info.file_size + 1)
        except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, zlib.error) as exc:
            raise ModelLoadError(subject, f"cannot decompress {WEIGHTS_MEMBER} ({exc})") from None
    if len(data) != info.file_size:
        raise ModelLoadError(
            subject,
            f"{WEIGHTS_MEMBER} declares {info.file_size} bytes but holds "
            f"{'more' if len(data) > info.file_size else len(data)}",
        )
    notes.append(f"{WEIGHTS_MEMBER} is compressed: decompressed into memory")
    return data


def _unknown_class_notes(model_entry: Mapping) -> list[str]:
    """Say which classes are not Keras' own: their variables are judged from weaker evidence."""
    # ``dict``, not ``Mapping``: the entries are parsed JSON, and the ABC check was a fifth of
    # this walk on a 6,000-variable config.
    custom: set[str] = set()
    hub_unknown: set[str] = set()
    seen: set[tuple] = set()  # a model repeats a few classes thousands of times: decide each once
    stack = [model_entry]
    while stack:
        entry = stack.pop()
        if type(entry) is not dict:
            continue
        class_name = entry.get("class_name")
        module, registered = entry.get("module"), entry.get("registered_name")
        # Tested part by part, not by all() over a generator: this runs on every entry (12,000 here).
        hashable = (
            type(class_name) is str
            and (module is None or type(module) is str)
            and (registered is None or type(registered) is str)
        )
        key = (class_name, module, registered)
        if isinstance(class_name, str) and not (hashable and key in seen):
            if hashable:
                seen.add(key)
            if is_hub_entry(entry):
                if class_for_entry(entry) is None:
                    hub_unknown.add(class_name)
            elif not is_builtin_entry(entry) and class_name not in ("Functional",):
                custom.add(f"{entry.get('module') or '?'}.{class_name}")
        config = entry.get("config")
        if type(config) is dict:
            # layer_configs(entry), inlined: non-dict members are dropped when popped. A loop, not
            # a generator: this walk visits every initializer of every layer (6,000 variables: 12,000).
            layers = config.get("layers")
            if type(layers) is list:
                stack.extend(layers)
            for value in config.values():
                if type(value) is dict and "class_name" in value:
                    stack.append(value)
    notes = []
    if hub_unknown:
        notes.append(
            f"keras_hub classes not in decay-audit's table (generated from keras_hub "
            f"{keras_hub_version()}; a newer keras_hub?), judged from names, shapes and positions: "
            f"{', '.join(sorted(hub_unknown))}"
        )
    if not custom:
        return notes
    return notes + [
        f"custom classes (not imported, judged from names, shapes and positions): {', '.join(sorted(custom))}"
    ]
