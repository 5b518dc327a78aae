"""Questions about Keras ``config.json`` entries that every Keras file reader asks.

The ``.keras`` zip, the legacy ``.h5`` and tf_keras' ``keras_metadata.pb`` all describe layers
with the same entry shape (``class_name``, ``module``, ``registered_name``, ``config``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from decay_audit.knowledge.keras import snake_case


def is_builtin_entry(entry: Mapping[str, Any] | None) -> bool:
    """True for a config entry of Keras' own classes (module ``keras.*``), not a user class of the same name."""
    if not entry:
        return False
    module = entry.get("module") or ""
    registered = entry.get("registered_name")
    return (
        isinstance(module, str)
        and (module == "keras" or module.startswith("keras."))
        and (registered in (None, entry.get("class_name")))
    )


def layer_configs(entry: Mapping[str, Any] | None) -> list[Mapping[str, Any]]:
    """The ``layers`` list of a Functional/Sequential config entry, else empty."""
    if not isinstance(entry, Mapping):
        return []
    config = entry.get("config")
    layers = config.get("layers") if isinstance(config, Mapping) else None
    return [layer for layer in layers if isinstance(layer, Mapping)] if isinstance(layers, list) else []


def entry_name(entry: Mapping[str, Any]) -> str | None:
    config = entry.get("config")
    name = config.get("name") if isinstance(config, Mapping) else None
    return name if isinstance(name, str) else None


def keras_keys(entries: list[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """Keys Keras gives list members in the h5 (saving_lib._save_container_state):
    the snake_case class name, then ``_1``, ``_2`` for repeats, in list order."""
    used: dict[str, int] = {}
    keys = {}
    for entry in entries:
        class_name = entry.get("class_name")
        if not isinstance(class_name, str):
            continue
        if class_name == "Functional" or class_name == "Model":
            class_name = "Functional"
        key = snake_case(class_name)
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        keys[key] = entry
    return keys


def nested_entries(config: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """Config entries a keras_hub model was built from (a Task's ``backbone``, CLIP's encoders),
    keyed as Keras keys them in its ``layers`` list: the snake_case class name."""
    found: dict[str, Mapping[str, Any]] = {}
    for value in config.values():
        if isinstance(value, Mapping) and isinstance(value.get("class_name"), str):
            key = snake_case(value["class_name"])
            found[key if key not in found else f"{key}_{len(found)}"] = value
    return found
