"""keras_hub presets (``save_to_preset`` directories) and keras_hub LoRA adapter files.

A preset is one model spread over files (keras_hub/src/utils/preset_utils.py, 0.32):
``config.json`` (the backbone's Keras config), ``model.weights.h5`` or, saved with
``max_shard_size``, ``model.weights.json`` plus ``model_0000N.weights.h5`` shards, ``metadata.json``
(the keras_hub and Keras versions that saved it), and for a task ``task.json`` (the task's config,
its backbone nested) and ``task.weights.h5`` (the task's own layers, the backbone skipped).
``keras_hub.models.X.from_preset(dir)`` builds the task when ``task.json`` is there, else the
backbone, so that is the model read here. Keras' unzipped ``.keras`` directory (config.json,
metadata.json, model.weights.h5) has the same layout and is read the same way, as ``load_model``
would rebuild it.

The backbone's weights tree is grafted where the task's own saving puts it (``layers/<snake_case
backbone class>``), so the walk sees what a ``.keras`` of the task holds and names the variables
as the rebuilt task does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from decay_audit.errors import ModelLoadError
from decay_audit.inventory import Inventory, VariableRecord
from decay_audit.knowledge.keras import snake_case
from decay_audit.knowledge.keras_hub import keras_hub_version
from decay_audit.loaders._compile_config import optimizer_from_compile_config
from decay_audit.loaders._h5 import open_h5
from decay_audit.loaders._h5index import H5Node, snapshot
from decay_audit.loaders._keras_tree import KerasTreeWalker
from decay_audit.loaders._shard_names import regular_file
from decay_audit.loaders.interface import Limits, LoaderName, parse_json
from decay_audit.loaders.sharded import join_keras_shards, open_regular, read_bounded, read_index

CONFIG_FILE = "config.json"
METADATA_FILE = "metadata.json"
MODEL_WEIGHTS_FILE = "model.weights.h5"
SHARDED_MODEL_WEIGHTS_FILE = "model.weights.json"
TASK_CONFIG_FILE = "task.json"
TASK_WEIGHTS_FILE = "task.weights.h5"


def is_preset_dir(path: Path) -> bool:
    """A directory holding ``config.json`` and the backbone's weights (plain or sharded); stat only."""
    return regular_file(path / CONFIG_FILE) and (
        regular_file(path / MODEL_WEIGHTS_FILE) or regular_file(path / SHARDED_MODEL_WEIGHTS_FILE)
    )


def _json(path: Path, limits: Limits) -> Any:
    return parse_json(read_bounded(path, str(path), limits), str(path), limits)


def _keras_entry(path: Path, limits: Limits) -> Mapping[str, Any]:
    entry = _json(path, limits)
    if not isinstance(entry, Mapping) or not isinstance(entry.get("class_name"), str):
        raise ModelLoadError(
            str(path),
            "is not a Keras object config (a Transformers or timm config.json is converted by keras_hub "
            "on load: scan the original checkpoint instead)",
        )
    return entry


def _tree(path: Path, limits: Limits) -> H5Node:
    """The weights index of one ``.weights.h5`` file, its datasets' paths naming the file."""
    subject = str(path)
    with open_regular(path, subject) as raw, open_h5(raw, subject) as h5:
        root = snapshot(h5, subject, limits)
    stack = [root]
    while stack:
        node = stack.pop()
        for child in node.children.values():
            if child.is_dataset:
                child.path = f"{path.name}:{child.path}"
            else:
                stack.append(child)
    return root


def _backbone_tree(directory: Path, limits: Limits) -> tuple[H5Node, str]:
    if regular_file(directory / MODEL_WEIGHTS_FILE):
        return _tree(directory / MODEL_WEIGHTS_FILE, limits), MODEL_WEIGHTS_FILE
    index = read_index(directory / SHARDED_MODEL_WEIGHTS_FILE, limits)
    if not index.keras:
        raise ModelLoadError(str(index.path), "is not a Keras sharded weights index")
    return join_keras_shards(index, limits), f"{SHARDED_MODEL_WEIGHTS_FILE} ({len(index.shards)} shards)"


def _graft(task_root: H5Node, key: str, backbone: H5Node) -> H5Node:
    """The task's tree with the backbone's under ``layers/<key>``, where a ``.keras`` of the task has it."""
    layers = task_root.children.get("layers")
    children = dict(layers.children) if layers is not None and not layers.is_dataset else {}
    # The backbone's address is in another file: 0 keeps it out of any comparison with the task's layers.
    children.setdefault(key, dataclasses.replace(backbone, address=0))
    grafted_layers = H5Node(path="layers", children=children)
    return H5Node(path="", children={**task_root.children, "layers": grafted_layers}, name_attr=task_root.name_attr)


def _metadata(directory: Path, limits: Limits) -> Mapping[str, Any]:
    path = directory / METADATA_FILE
    if not regular_file(path):
        return {}
    try:
        value = _json(path, limits)
    except ModelLoadError:
        return {}  # evidence only: a broken metadata.json does not stop the read of the weights
    return value if isinstance(value, Mapping) else {}


def _short(value: Any, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[:limit] + "..."


def load_preset(directory: Path, limits: Limits) -> Inventory:
    """The model ``from_preset(directory)`` builds: the task when ``task.json`` is there, else the backbone."""
    from decay_audit.loaders.keras_zip import _unknown_class_notes

    subject = str(directory)
    backbone_entry = _keras_entry(directory / CONFIG_FILE, limits)
    backbone, weights_from = _backbone_tree(directory, limits)
    metadata = _metadata(directory, limits)
    task_path = directory / TASK_CONFIG_FILE
    if regular_file(task_path):
        model_entry = _keras_entry(task_path, limits)
        config = model_entry.get("config")
        nested = config.get("backbone") if isinstance(config, Mapping) else None
        backbone_class = nested.get("class_name") if isinstance(nested, Mapping) else None
        if not isinstance(backbone_class, str):
            backbone_class = backbone_entry["class_name"]
        task_root = (
            _tree(directory / TASK_WEIGHTS_FILE, limits)
            if regular_file(directory / TASK_WEIGHTS_FILE)
            else H5Node(path="", children={})
        )
        root = _graft(task_root, snake_case(backbone_class), backbone)
        what = (
            f"the task {_short(model_entry['class_name'])} from {TASK_CONFIG_FILE}"
            + (f" and {TASK_WEIGHTS_FILE}" if task_root.children else "")
            + f", its backbone {_short(backbone_class)} from {CONFIG_FILE} and {weights_from}"
        )
    else:
        model_entry, root = backbone_entry, backbone
        role = "backbone" if isinstance(metadata.get("keras_hub_version"), str) else "model"
        what = f"the {role} {_short(backbone_entry['class_name'])} from {CONFIG_FILE} and {weights_from}"
    walker = KerasTreeWalker(subject, limits)
    records = walker.walk_model(root, model_entry)
    hub_version = metadata.get("keras_hub_version")
    keras_version = metadata.get("keras_version")
    if isinstance(hub_version, str):
        saved = f"saved by keras_hub {_short(hub_version)}" + (
            f" with Keras {_short(keras_version)}" if isinstance(keras_version, str) else ""
        )
        notes = [
            f"keras_hub preset ({saved}; decay-audit's keras_hub table is from {keras_hub_version()}): "
            f"read {what}; paths as keras_hub.models.{_short(model_entry['class_name'])}.from_preset(dir) names them"
        ]
    else:
        saved = f"saved by Keras {_short(keras_version)}" if isinstance(keras_version, str) else "no metadata.json"
        notes = [f"Keras model directory ({saved}): read {what}; paths as keras.saving.load_model(dir) names them"]
    notes.extend(walker.notes)
    notes.extend(_unknown_class_notes(model_entry))
    raw_config = model_entry.get("config")
    name = raw_config.get("name") if isinstance(raw_config, Mapping) else None
    return Inventory(
        source=subject,
        loader=LoaderName.KERAS_DIRECTORY.value,
        records=tuple(records),
        notes=tuple(notes),
        model_name=name if isinstance(name, str) else None,
        optimizer=optimizer_from_compile_config(model_entry.get("compile_config")),  # presets drop it; Keras keeps it
    )


# -- LoRA adapters --------------------------------------------------------------------------------

LORA_NOTE = (
    "a keras_hub LoRA adapter (Backbone.save_lora_weights), not a model: only the low-rank update "
    "factors of the layers it adapts, each numbered by its position among the backbone's layers that "
    "hold weights; load it into its backbone with load_lora_weights, and scan that backbone for the rest"
)


def load_lora_adapter(h5: Any, subject: str, limits: Limits) -> Inventory:
    """A ``.lora.h5`` (keras_hub/src/models/backbone.py ``save_lora_weights``, 0.32): ``lora/vars/rank``
    and, per adapted layer, ``lora/<i>/vars/lora_kernel_a`` and ``lora_kernel_b``.

    The factors are what the optimizer trains when the adapter is in use (the base kernel is
    frozen), and they are weight matrices: trainable, kernel-like."""
    root = snapshot(h5, subject, limits)
    lora = root.get("lora")
    rank_group = lora.get("vars") if lora is not None else None
    if lora is None or rank_group is None or "rank" not in rank_group:
        raise ModelLoadError(subject, "HDF5 file holds no Keras model or weights layout")
    records: list[VariableRecord] = []
    for key in sorted((k for k in lora.keys() if k.isdigit()), key=int):
        factors = lora[key].get("vars")
        if factors is None:
            continue
        for leaf in ("lora_kernel_a", "lora_kernel_b"):
            dataset = factors.get(leaf)
            if dataset is None or not dataset.is_dataset:
                raise ModelLoadError(subject, f"LoRA adapter layer {key} has no {leaf} dataset")
            limits.check("max_variables", len(records) + 1, subject)
            records.append(
                VariableRecord(
                    path=f"lora/{key}/{leaf}",
                    leaf=leaf,
                    layer=f"lora/{key}",
                    layer_class=None,
                    shape=dataset.shape or (),
                    dtype=dataset.dtype or "unknown",
                    trainable=True,
                    origin=dataset.path,
                    leaf_known=True,
                )
            )
    if not records:
        raise ModelLoadError(subject, "keras_hub LoRA adapter holds no adapted layer (no lora/<i>/vars)")
    return Inventory(
        source=subject,
        loader=LoaderName.LORA_ADAPTER.value,
        records=tuple(records),
        notes=(LORA_NOTE,),
    )
