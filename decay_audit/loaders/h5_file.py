"""Loader for HDF5 model files: legacy ``.h5`` (Keras 3 ``model.save("x.h5")`` and tf_keras)
and weights-only files (Keras 3 ``.weights.h5`` and legacy ``save_weights("x.h5")``).

Legacy files list each layer's variables by full name in the ``weight_names``
attribute, so paths are what the saving model called them. Weights-only files have
no config: classes are guessed from Keras' auto-generated names and the report says so.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from decay_audit.errors import LimitExceededError, ModelLoadError
from decay_audit.inventory import Inventory, VariableRecord
from decay_audit.knowledge import transformers as hf_names
from decay_audit.knowledge.keras import (
    LAYER_VARIABLES,
    SUBLAYER_CLASS_BY_PARENT,
    keras_class_name_candidates,
    legacy_order,
    wraps_a_layer,
)
from decay_audit.loaders._compile_config import optimizer_from_compile_config
from decay_audit.loaders._h5 import attribute_texts, open_h5, root_text
from decay_audit.loaders._h5header import DeclaredTooLong
from decay_audit.loaders._keras_config import is_builtin_entry, layer_configs
from decay_audit.loaders._keras_tree import KerasTreeWalker, unknown_trainability, unknown_trainability_note
from decay_audit.loaders._shard_names import refusal, shard_index_name
from decay_audit.loaders.interface import Limits, LoaderName, parse_json
from decay_audit.loaders.sharded import NO_CONFIG_NOTE, ShardIndex, open_regular, shard_path

HF_CONFIG_FILE = "config.json"


def load_h5(path: Path, limits: Limits) -> Inventory:
    subject = str(path)
    with open(path, "rb") as raw, open_h5(raw, subject) as h5:
        model_config_text = _root_config(h5, "model_config", subject, limits)
        if model_config_text is not None:
            model_entry = parse_json(model_config_text, f"{subject}:model_config", limits)
            training_text = _root_config(h5, "training_config", subject, limits)
            training = parse_json(training_text, f"{subject}:training_config", limits) if training_text else None
        else:
            model_entry, training = None, None
        duplicates, legacy = 0, False
        if "model_weights" in h5 or "layer_names" in h5.attrs:
            weights_root = h5["model_weights"] if "model_weights" in h5 else h5
            records, duplicates = _legacy_records(weights_root, model_entry, subject, limits, h5)
            legacy = True
            loader = LoaderName.LEGACY_H5 if model_entry is not None else LoaderName.WEIGHTS_H5
        elif "layers" in h5 or "vars" in h5:
            records = KerasTreeWalker(subject, limits).walk_model(h5, model_entry)
            loader = LoaderName.WEIGHTS_H5
        elif "lora" in h5:
            from decay_audit.loaders.preset import load_lora_adapter

            return load_lora_adapter(h5, subject, limits)
        else:
            raise ModelLoadError(subject, "HDF5 file holds no Keras model or weights layout")
        if legacy and not records and model_entry is None:
            _refuse_hf_shard(path, h5, weights_root)
        if not legacy and not records and model_entry is None and shard_index_name(path.name):
            raise ModelLoadError(subject, refusal(path))  # a Keras shard holding only other shards' groups
    notes: tuple[str, ...] = () if model_entry is not None else (NO_CONFIG_NOTE,)
    if model_entry is None and shard_index_name(path.name) and not legacy:
        notes += (
            f"named like one shard of a sharded Keras checkpoint, but its index {shard_index_name(path.name)} "
            "is not beside it: read as a whole weights file (if it is a shard, this is only part of the model)",
        )
    if duplicates:
        notes += (
            f"{duplicates} weight names listed under more than one layer (a shared variable, such as "
            f"a tied embedding, saved once per layer that uses it): each variable listed once",
        )
    model_name = None
    hf = None
    if model_entry is None and legacy:
        hf = hugging_face(path, records, limits)
        if hf is not None:
            records, hf_notes, model_name = hf
            notes = hf_notes + notes[1:]
        else:
            records = unknown_trainability(records)
    unknown = sum(1 for r in records if not r.trainable_known)
    if unknown:
        notes += (unknown_trainability_note(unknown),)
    if isinstance(model_entry, Mapping) and isinstance(model_entry.get("config"), Mapping):
        model_name = model_entry["config"].get("name")
    return Inventory(
        source=subject,
        loader=loader.value,
        records=tuple(records),
        notes=notes,
        model_name=model_name if isinstance(model_name, str) else None,
        optimizer=optimizer_from_compile_config(training),
    )


def _refuse_hf_shard(path: Path, h5: Any, weights_root: Any) -> None:
    """A transformers TF shard lists datasets, not layer groups, in ``layer_names`` (modeling_tf_utils
    4.49 ``save_pretrained``): read as a legacy file it would hold no variable. Refused, whatever its
    name, naming the index to scan (its index beside it is read by ``loaders.start_load`` instead)."""
    names = attribute_texts(h5, weights_root, "layer_names") or []
    first = next((n for n in names if n), None)
    if first is not None and first in weights_root and hasattr(weights_root[first], "shape"):
        raise ModelLoadError(str(path), refusal(path))


def _root_config(h5: Any, name: str, subject: str, limits: Limits) -> str | None:
    """A JSON attribute of the root group, bounded by ``max_config_bytes`` (checked on the declared
    length where the header reader sees it, before the read)."""
    try:
        text = root_text(h5, name, limits.max_config_bytes)
    except DeclaredTooLong as exc:
        limits.check("max_config_bytes", exc.length, f"{subject}:{name}")
        raise  # unreachable: the check above fails
    if text is not None:
        limits.check("max_config_bytes", len(text), f"{subject}:{name}")
    return text


def _config_index(model_entry: Any) -> dict[str, tuple[Mapping[str, Any], tuple[str, ...]]]:
    """Layer name → (config entry, classes of the enclosing layers), over the whole config tree."""
    index: dict[str, tuple[Mapping[str, Any], tuple[str, ...]]] = {}
    stack: list[tuple[Any, tuple[str, ...]]] = [(model_entry, ())]
    while stack:
        entry, parents = stack.pop()
        if not isinstance(entry, Mapping):
            continue
        config = entry.get("config")
        class_name = entry.get("class_name")
        if isinstance(config, Mapping) and isinstance(config.get("name"), str):
            index.setdefault(config["name"], (entry, parents))
        inner = parents + ((class_name,) if isinstance(class_name, str) else ())
        stack.extend((layer, inner) for layer in layer_configs(entry))
        if isinstance(config, Mapping):
            stack.extend((v, inner) for v in config.values() if isinstance(v, Mapping) and "class_name" in v)
    return index


def _legacy_records(
    weights_root: Any, model_entry: Any, subject: str, limits: Limits, h5: Any = None
) -> tuple[list[VariableRecord], int]:
    """Records in file order, each weight name once, and how many repeated names were dropped.

    tf_keras ``save_weights`` writes a variable under every top-level layer that tracks it: HF T5's
    tied ``shared/shared/embeddings`` sits in the ``shared``, ``encoder`` and ``decoder`` groups
    (transformers 4.49). It is one variable (one name in ``model.weights``), so one record.
    """
    index = _config_index(model_entry)
    records: list[VariableRecord] = []
    seen: set[str] = set()
    duplicates = 0
    layer_names = attribute_texts(h5, weights_root, "layer_names")
    # Keras 3 rebuilds wrappers without their name scope; tf_keras keeps ``bidirectional/forward_lstm``.
    version = _keras_version(h5) if h5 is not None else None
    keras3 = bool(version) and str(version).startswith("3")
    names = layer_names if layer_names is not None else list(weights_root.keys())
    limits.check("max_objects", len(names), subject)  # each name costs an h5 lookup, even a missing one
    for layer_name in names:
        if not layer_name or layer_name not in weights_root:
            continue
        group = weights_root[layer_name]
        weight_names = attribute_texts(h5, group, "weight_names")
        if weight_names is None:
            continue
        group_records: list[VariableRecord] = []
        for weight_name in weight_names:
            if not weight_name:
                continue
            if weight_name in seen:
                duplicates += 1
                continue
            seen.add(weight_name)
            limits.check("max_variables", len(records) + 1, subject)
            if weight_name not in group:
                raise ModelLoadError(subject, f"weight {weight_name!r} listed for layer {layer_name!r} is missing")
            dataset = group[weight_name]
            if not hasattr(dataset, "shape"):  # a group where a weight should be (found by fuzzing)
                raise ModelLoadError(
                    subject, f"weight {weight_name!r} listed for layer {layer_name!r} is not a dataset"
                )
            group_records.append(legacy_record(weight_name, layer_name, dataset, index))
        ordered = _in_loaded_order(group_records, index)
        records.extend(_unwrapped(ordered, layer_name, index) if keras3 else ordered)
    return records, duplicates


def _keras_version(h5: Any) -> str | None:
    """The ``keras_version`` root attribute (``3.15.1``; tf_keras writes ``2.x``), or None."""
    try:
        return root_text(h5, "keras_version", 64)
    except DeclaredTooLong:
        return None


def _unwrapped(
    records: list[VariableRecord], layer_name: str, index: Mapping[str, tuple[Mapping[str, Any], tuple[str, ...]]]
) -> list[VariableRecord]:
    """A top-level Keras wrapper's records as ``load_model`` rebuilds them (see
    ``knowledge.keras.wraps_a_layer``): the wrapped layers' variables lose the wrapper's name
    (``bi/forward_lstm/...`` is saved, ``forward_lstm/...`` loaded), and a variable the wrapper
    takes from its wrapped layer (SpectralNormalization's kernel) comes at the wrapper's position
    for it, before the wrapper's own non-trainable state and the wrapped layer's other variables."""
    entry = index.get(layer_name, (None, ()))[0]
    config = entry.get("config") if entry else None
    builtin = is_builtin_entry(entry) or (entry is not None and "module" not in entry)  # legacy: no module key
    if not builtin or not isinstance(config, Mapping) or not wraps_a_layer(config):
        return records
    prefix = f"{layer_name}/"
    renamed = [
        dataclasses.replace(r, path=r.path[len(prefix) :])
        if r.path.startswith(prefix) and r.path.count("/") >= 2
        else r
        for r in records
    ]
    class_name = entry.get("class_name") if entry else None
    slots = LAYER_VARIABLES.get(class_name, ()) if isinstance(class_name, str) else ()
    ordered: list[VariableRecord] = []
    for slot in slots:
        if slot.shared_from:
            taken = next(
                (r for leaf in slot.shared_leaves for r in renamed if r.leaf == leaf and r.layer != layer_name), None
            )
        else:
            taken = next((r for r in renamed if r.leaf == slot.leaf and r.layer == layer_name), None)
        if taken is not None and taken not in ordered:
            ordered.append(taken)
    return ordered + [r for r in renamed if r not in ordered]


def _in_loaded_order(
    records: list[VariableRecord], index: Mapping[str, tuple[Mapping[str, Any], tuple[str, ...]]]
) -> list[VariableRecord]:
    """A layer's records in the ``model.weights`` order ``load_model`` gives, with its trainability.

    Keras writes a legacy ``.h5`` layer's weight names as trainable weights, then non-trainable
    ones; for a quantized layer or one with LoRA that is neither ``model.weights``' order nor
    knowable from the names (a LoRA-frozen kernel is listed after the factors). Where the
    knowledge table knows the class and its config, it gives both; elsewhere the file order stays."""
    # Keyed by the owner's path, not its name: one top-level layer may hold several layers of one
    # name (HF Whisper's ``model`` group holds three ``k_proj``), and grouping by name would move
    # every one of them to where the first is listed.
    by_owner: dict[tuple[str | None, str], list[VariableRecord]] = {}
    for record in records:
        by_owner.setdefault((record.layer, record.path.rpartition("/")[0]), []).append(record)
    ordered: list[VariableRecord] = []
    for (owner, _), owned in by_owner.items():
        entry = index.get(owner or "", (None, ()))[0]
        class_name = entry.get("class_name") if entry else None
        config = entry.get("config") if entry else None
        plan = (
            legacy_order(class_name, config if isinstance(config, Mapping) else None, [r.leaf for r in owned])
            if isinstance(class_name, str)
            else None
        )
        if plan is None:
            ordered.extend(owned)
            continue
        layer_trainable = not isinstance(config, Mapping) or bool(config.get("trainable", True))
        by_leaf = {record.leaf: record for record in owned}
        ordered.extend(
            dataclasses.replace(by_leaf[leaf], trainable=layer_trainable and trainable) for leaf, trainable in plan
        )
    return ordered


def hugging_face(
    path: Path, records: list[VariableRecord], limits: Limits
) -> tuple[list[VariableRecord], tuple[str, ...], str | None] | None:
    """Mark the records of a Hugging Face ``tf_model.h5`` (``save_pretrained``), or None if it is not one.

    Evidence, strongest first: a ``config.json`` beside the file naming a ``model_type`` (what
    ``from_pretrained`` reads); HF's ``layer_._0`` naming of list-held layers in the weight names.
    Paths stay the names the file lists, which are ``variable.name`` (less ``:0``) of the TF model
    built by ``from_pretrained``: transformers' ``load_tf_weights_from_h5`` matches them after
    dropping the first component, the model's own name (modeling_tf_utils.py, 4.49).
    """
    config = _hf_config(path.parent / HF_CONFIG_FILE, limits)
    if config is None and not any(hf_names.NAME_SEPARATOR in r.path for r in records):
        return None
    notes: list[str] = []
    naming = hf_names.HF_NAMING
    if config is not None:
        # Quoted in every variable's evidence: bounded, whatever the file claims.
        model_type = _short(config.get("model_type"))
        architectures = config.get("architectures")
        names = (
            ", ".join(_short(a) for a in architectures[:4] if isinstance(a, str))
            if isinstance(architectures, list)
            else ""
        )
        raw_version = config.get("transformers_version")
        version = _short(raw_version) if isinstance(raw_version, str) else None
        evidence = (
            f"Hugging Face checkpoint (config.json model_type {model_type!r}" + (f", {names}" if names else "") + ")"
        )
        notes.append(
            f"Hugging Face {model_type} checkpoint ({names or 'no architectures listed'}, saved by "
            f"transformers {version or 'unknown'}): paths are the TF model's variable names"
        )
        if not hf_names.version_is_checked(raw_version if isinstance(raw_version, str) else None):
            naming = hf_names.HF_NAMING_NEWER
            notes.append(
                f"saved by transformers {version}, newer than the {hf_names.TRANSFORMERS_VERSION} "
                f"whose TF layers decay-audit knows: HF-specific names judged with lower confidence"
            )
            evidence += f", transformers {version} newer than the checked {hf_names.TRANSFORMERS_VERSION}"
    else:
        evidence = f"Hugging Face TF naming (`{hf_names.NAME_SEPARATOR}` list layers; no config.json beside the file)"
        notes.append("Hugging Face TF checkpoint without config.json: recognised by its layer naming")
    marked = []
    declared_type = config.get("model_type") if config is not None else None
    for record in records:
        entry = hf_names.hf_weight_for(record.path, record.shape)
        frozen = hf_names.hf_frozen_by_library(declared_type if isinstance(declared_type, str) else None, record.path)
        trainable = record.trainable and (entry is None or entry.trainable) and frozen is None
        marked.append(dataclasses.replace(record, naming=naming, naming_evidence=evidence, trainable=trainable))
    model_name = records[0].path.split("/", 1)[0] if records and "/" in records[0].path else None
    return marked, tuple(notes), model_name


def _short(text: Any, limit: int = 80) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "..."


def _hf_config(path: Path, limits: Limits) -> Mapping[str, Any] | None:
    """A ``save_pretrained`` ``config.json`` (a JSON object with ``model_type``), or None."""
    try:
        if not path.is_file():
            return None
        limits.check("max_config_bytes", path.stat().st_size, str(path))
        text = path.read_bytes()
    except OSError:
        return None
    try:
        config = parse_json(text, str(path), limits)
    except LimitExceededError:
        raise
    except ModelLoadError:
        return None  # a broken config beside the weights: read the weights as any h5
    if isinstance(config, Mapping) and isinstance(config.get("model_type"), str):
        return config
    return None


def legacy_record(weight_name: str, top_layer: str, dataset: Any, index: Mapping) -> VariableRecord:
    path = weight_name[:-2] if weight_name.endswith(":0") else weight_name
    parts = path.split("/")
    leaf = parts[-1]
    owner = parts[-2] if len(parts) > 1 else top_layer
    entry, parents = index.get(owner, (None, ()))
    if entry is None:
        # A sublayer the config does not list (tf_keras ``lstm/lstm_cell/kernel``): its
        # enclosing layer is the deepest listed name along the path.
        for name in reversed(parts[:-1]):
            if name in index:
                outer, outer_parents = index[name]
                parents = outer_parents + (outer.get("class_name"),)
                break
        else:
            if top_layer in index:
                outer, outer_parents = index[top_layer]
                parents = outer_parents + (outer.get("class_name"),)
    class_name = entry.get("class_name") if entry else None
    config = entry.get("config") if entry else None
    if entry is None and parents and (parents[-1], "cell") in SUBLAYER_CLASS_BY_PARENT:
        class_name = SUBLAYER_CLASS_BY_PARENT[(parents[-1], "cell")]  # tf_keras ``lstm/lstm_cell/kernel``
        entry = {
            "class_name": class_name,
            "module": "keras.layers",
            "config": index[parts[-3]][0].get("config") if len(parts) > 2 and parts[-3] in index else {},
        }
        config = entry["config"]
    trainable = True
    if isinstance(config, Mapping):
        trainable = bool(config.get("trainable", True))
    if leaf.startswith("moving_") or leaf in ("count",):
        trainable = False  # legacy files do not record trainability; these are never trained
    if isinstance(class_name, str) and any(
        slot.leaf == leaf and not slot.trainable for slot in LAYER_VARIABLES.get(class_name, ())
    ):
        trainable = False  # created non-trainable by its class (SpectralNormalization's vector_u)
    hint = None
    if class_name is None:
        candidates = keras_class_name_candidates(owner)
        hint = candidates[0] if candidates else None
    return VariableRecord(
        path=path,
        leaf=leaf,
        layer=owner,
        layer_class=class_name if isinstance(class_name, str) else None,
        shape=tuple(int(d) for d in dataset.shape),
        dtype=str(dataset.dtype),
        trainable=trainable,
        origin=dataset.name.lstrip("/"),
        leaf_known=True,
        parent_classes=tuple(p for p in parents if isinstance(p, str)),
        layer_builtin=is_builtin_entry(entry)
        or (entry is not None and "module" not in entry and isinstance(class_name, str)),
        class_hint=hint,
    )


# -- a sharded save_pretrained checkpoint ---------------------------------------------------------


def _hf_stripped(full_name: str) -> str:
    """The dataset name transformers writes for a variable (modeling_tf_utils.save_pretrained):
    its name without the model's own first component, unless it holds ``model.`` or is one part."""
    if "model." in full_name or len(full_name.split("/")) == 1:
        return full_name
    return full_name.split("/", 1)[1]


def load_hf_shards(index: ShardIndex, limits: Limits, subject: str) -> Inventory:
    """Rows of a sharded ``save_pretrained`` checkpoint: the same as the unsharded ``tf_model.h5``'s.

    Names come from the index (full ``variable.name``s, as the unsharded file's ``weight_names``
    hold them); which shard holds which dataset, and its shape, from each shard's ``layer_names``.
    The unsharded file lists ``model.weights`` order; shards keep it from one shard to the next
    but sort names within a shard, so that is the order here."""
    full_by_shard: dict[str, dict[str, str]] = {}
    prefixes: dict[str, None] = {}
    for key, names in index.weight_map:
        for name in names:
            full_by_shard.setdefault(name, {})[_hf_stripped(key)] = key
        if "/" in key:
            prefixes.setdefault(key.split("/", 1)[0], None)
    prefix = next(iter(prefixes), None) if len(prefixes) == 1 else None
    records: list[VariableRecord] = []
    seen: set[str] = set()
    for name in index.shards:
        shard = shard_path(index, name)
        shard_subject = str(shard)
        with open_regular(shard, shard_subject) as raw, open_h5(raw, shard_subject, small_in_memory=False) as h5:
            listed = attribute_texts(h5, h5, "layer_names")
            if listed is None:
                raise ModelLoadError(shard_subject, "shard has no layer_names attribute: not a transformers TF shard")
            limits.check("max_objects", len(listed), shard_subject)
            for dataset_name in listed:
                if not dataset_name or dataset_name not in h5:
                    continue
                dataset = h5[dataset_name]
                if not hasattr(dataset, "shape"):
                    raise ModelLoadError(shard_subject, f"layer_names lists {dataset_name!r}, which is not a dataset")
                full = full_by_shard.get(name, {}).get(dataset_name)
                if full is None:
                    full = f"{prefix}/{dataset_name}" if prefix and "model." not in dataset_name else dataset_name
                if full in seen:
                    continue
                seen.add(full)
                limits.check("max_variables", len(records) + 1, subject)
                parts = full.split("/")
                record = legacy_record(full, parts[1] if len(parts) > 2 else parts[0], dataset, {})
                records.append(_with_origin(record, f"{name}:{dataset.name.lstrip('/')}"))
    notes: tuple[str, ...] = (NO_CONFIG_NOTE,)
    model_name = None
    hf = hugging_face(index.path, records, limits)
    if hf is not None:
        records, hf_notes, model_name = hf
        notes = hf_notes
    notes += (f"sharded Hugging Face TF checkpoint: {len(index.shards)} shards joined through {index.path.name}",)
    return Inventory(
        source=subject,
        loader=LoaderName.HF_SHARDED.value,
        records=tuple(records),
        notes=notes,
        model_name=model_name,
    )


def _with_origin(record: VariableRecord, origin: str) -> VariableRecord:
    return dataclasses.replace(record, origin=origin)
