"""tf_keras' ``keras_metadata.pb`` beside a SavedModel: layer classes, names, configs, frozen flags.

The object graph alone says nothing of Keras layers; tf_keras ``model.save(dir)`` records each
layer's metadata JSON under its object-graph path (``root.layer-1.cell``), which this module
reads and resolves to object-graph node ids.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from decay_audit.loaders._protowire import as_text, iter_fields
from decay_audit.loaders.interface import Limits

KERAS_METADATA_FILE = "keras_metadata.pb"


class ObjectNode(Protocol):
    """An object-graph node as the SavedModel reader parses it: (child node id, local name) pairs."""

    children: list[tuple[int, str]]


def read_keras_metadata(path: Path, limits: Limits) -> dict[str, dict[str, Any]]:
    """node_path → the layer's metadata JSON (class, name, config); empty when the file is absent."""
    if not path.is_file():
        return {}
    limits.check("max_config_bytes", path.stat().st_size, str(path))
    result: dict[str, dict[str, Any]] = {}
    for number, _, value in iter_fields(path.read_bytes()):
        if number != 1:
            continue
        node_path, metadata = "", ""
        for inner, _, inner_value in iter_fields(value):
            if inner == 3:
                node_path = as_text(inner_value)
            elif inner == 5:
                metadata = as_text(inner_value)
        try:
            parsed = json.loads(metadata) if metadata else {}
        except (ValueError, RecursionError):
            parsed = {}
        if isinstance(parsed, dict):
            result[node_path] = parsed
    return result


class _NodePaths:
    """Resolves ``root.layer-1.cell`` paths to node ids, indexing each node's children by name once:
    rebuilding the index per path step would be quadratic when a node has many children and many
    metadata paths go through it."""

    def __init__(self, nodes: Sequence[ObjectNode]):
        self._nodes = nodes
        self._children: dict[int, dict[str, int]] = {}

    def resolve(self, node_path: str) -> int:
        """The node id, or -1 when the path does not start at ``root`` or names a missing child."""
        parts = node_path.split(".")
        if parts[0] != "root":
            return -1
        node_id = 0
        for part in parts[1:]:
            children = self._children.get(node_id)
            if children is None:
                children = self._children[node_id] = {name: child for child, name in self._nodes[node_id].children}
            if part not in children:
                return -1
            node_id = children[part]
        return node_id


def layer_info(nodes: Sequence[ObjectNode], metadata: Mapping[str, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Object-graph node id → tf_keras layer metadata."""
    paths = _NodePaths(nodes)
    info: dict[int, dict[str, Any]] = {}
    for node_path, meta in metadata.items():
        node_id = paths.resolve(node_path)
        if node_id >= 0:
            info[node_id] = meta
    return info


def frozen_layers(metadata: Mapping[str, dict[str, Any]], nodes: Sequence[ObjectNode]) -> set[int]:
    """Object-graph ids of tf_keras layers that are frozen, directly or through an enclosing layer.

    tf_keras ``layer.trainable = False`` leaves each ``tf.Variable``'s own trainable flag True
    (tf_keras 2.21), so the object graph alone calls a frozen base trainable; ``keras_metadata.pb``
    records ``"trainable": false`` on the layer (and on the model that holds it).
    """
    frozen_paths = {p for p, meta in metadata.items() if meta.get("trainable") is False}
    frozen: set[int] = set()
    if not frozen_paths:
        return frozen
    paths = _NodePaths(nodes)
    for node_path in metadata:
        parts = node_path.split(".")
        if any(".".join(parts[:end]) in frozen_paths for end in range(1, len(parts) + 1)):
            node_id = paths.resolve(node_path)
            if node_id >= 0:
                frozen.add(node_id)
    return frozen
