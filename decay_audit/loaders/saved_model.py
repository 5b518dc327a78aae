"""Loader for TensorFlow SavedModel directories, reading ``saved_model.pb`` without TensorFlow.

Covers Keras 3 ``model.export``, ``tf.saved_model.save`` of a Keras 3 model or a plain
``tf.Module``, and tf_keras ``model.save(dir)`` (whose ``keras_metadata.pb`` adds layer
classes and configs). The object graph lists every variable's name, shape, dtype and
trainable flag; the function library shows how the computation consumes each variable
(MatMul, Conv2D, BiasAdd, FusedBatchNorm, gather...), which is the best evidence left
when no layer class is recorded. Variable values are never read.
"""

from __future__ import annotations

import dataclasses
import re
from collections import deque
from collections.abc import Iterable, Mapping, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decay_audit.errors import ModelLoadError
from decay_audit.inventory import Inventory, VariableRecord
from decay_audit.knowledge.keras import LAYER_VARIABLES, keras_class_name_candidates
from decay_audit.loaders._keras_config import is_builtin_entry
from decay_audit.loaders._keras_metadata import KERAS_METADATA_FILE, frozen_layers, layer_info, read_keras_metadata
from decay_audit.loaders._protowire import (
    ProtoDecodeError,
    as_int,
    as_signed64,
    as_text,
    iter_fields,
    iter_packed_varints,
)
from decay_audit.loaders._saved_model_graph import graph_uses
from decay_audit.loaders.interface import Limits, LoaderName

SAVED_MODEL_FILE = "saved_model.pb"
SEED_STATE_LEAF = "seed_generator_state"

# tensorflow/core/framework/types.proto DataType values that variables use.
_DTYPES = {
    1: "float32",
    2: "float64",
    3: "int32",
    4: "uint8",
    5: "int16",
    6: "int8",
    7: "string",
    9: "int64",
    10: "bool",
    14: "bfloat16",
    17: "uint16",
    19: "float16",
    22: "uint32",
    23: "uint64",
    20: "resource",
    21: "variant",
}

# Edges that lead to functions, signatures and caches rather than to the model's state.
_SKIP_EDGES = frozenset(
    {
        "signatures",
        "_misc_assets",
        "keras_api",
        "__call__",
        "serve",
        "serving_default",
        "call_and_return_all_conditional_losses",
        "call_and_return_conditional_losses",
        "_default_save_signature",
        "_inbound_nodes",
        "_outbound_nodes",
        "_losses",
    }
)


@dataclass
class _Node:
    children: list[tuple[int, str]] = field(default_factory=list)
    kind: str = "other"
    identifier: str = ""
    variable: dict[str, Any] | None = None


def load_saved_model(directory: Path, limits: Limits) -> Inventory:
    subject = str(directory)
    pb_path = directory / SAVED_MODEL_FILE
    size = pb_path.stat().st_size
    limits.check("max_graph_bytes", size, str(pb_path))
    data = pb_path.read_bytes()
    try:
        object_graph, graph_def = _meta_graph_parts(data)
        if object_graph is None:
            raise ModelLoadError(str(pb_path), "no object graph (a TF1 SavedModel): variables cannot be listed")
        nodes, concrete = _object_graph(object_graph, limits, str(pb_path))
        metadata = read_keras_metadata(directory / KERAS_METADATA_FILE, limits)
        variable_ids, paths = _find_variables(nodes)
        limits.check("max_variables", len(variable_ids), str(pb_path))
        owners = _owners(nodes, variable_ids)
        layers = layer_info(nodes, metadata)
        uses, reads, unfinished = (
            graph_uses(graph_def, concrete, set(variable_ids), limits, str(pb_path))
            if graph_def is not None
            else ({}, {}, 0)
        )
    except ProtoDecodeError as exc:
        raise ModelLoadError(str(pb_path), f"corrupt protobuf ({exc})") from None
    frozen = frozen_layers(metadata, nodes)
    records = [
        _record(node_id, nodes[node_id], paths[node_id], owners.get(node_id), layers, uses.get(node_id, ()), frozen)
        for node_id in variable_ids
    ]
    notes = []
    keras3_export = not metadata and all(
        paths[n].startswith(("trainable_variables/", "non_trainable_variables/")) for n in variable_ids
    )
    if not metadata and not keras3_export:
        records, unknown = _trainability_from_object_graph(nodes, variable_ids, records)
        if unknown:
            notes.append(
                f"trainability of {unknown} variables unknown: tf.saved_model.save of a Keras 3 model "
                "records each tf.Variable's own flag, which stays True when its layer is frozen, and "
                "not which layers are frozen; they are decided as if trainable (the reason says so)"
            )
    records, renamed, numbered = _unique_paths(records, variable_ids, reads if keras3_export else {})
    if renamed:
        notes.append(
            f"{renamed} variables share their tf.Variable name with another (Keras 3 names a "
            f"variable by the layer scope it was created in): paths rebuilt from the layer scopes "
            f"the saved functions read them in"
        )
    if numbered:
        notes.append(
            f"{numbered} variables still share a path with another (as in the Keras model itself): "
            f"numbered `#2`, `#3`, ... in object-graph order"
        )
    seed_states = [r for r in records if r.leaf == SEED_STATE_LEAF and not r.trainable]
    if seed_states:
        # Keras 3 exports dropout/noise SeedGenerator states with the model's variables; they are
        # in model.variables but not model.weights, and no optimizer ever sees them.
        records = [r for r in records if not (r.leaf == SEED_STATE_LEAF and not r.trainable)]
        notes.append(f"{len(seed_states)} Keras SeedGenerator states skipped (random-number state, not weights)")
    if not metadata:
        notes.append("no Keras layer classes in a SavedModel: judged from names, shapes and graph use")
    if unfinished:
        notes.append(
            f"graph-use walk stopped at its step budget (linear in the graph's edges) with "
            f"{unfinished} function arguments holding variables not followed: graph evidence for "
            f"those variables may be missing, names and shapes still apply"
        )
    model_name = None
    root_meta = layers.get(0)
    if root_meta:
        model_name = root_meta.get("name")
    return Inventory(
        source=subject,
        loader=LoaderName.SAVED_MODEL.value,
        records=tuple(records),
        notes=tuple(notes),
        model_name=model_name,
    )


# -- protobuf structure ---------------------------------------------------------------------


def _meta_graph_parts(data: bytes) -> tuple[Any, Any]:
    """(SavedObjectGraph bytes, GraphDef bytes) of the first MetaGraphDef."""
    for number, _, value in iter_fields(data):
        if number == 2 and isinstance(value, memoryview):  # SavedModel.meta_graphs
            object_graph = graph_def = None
            for inner, _, inner_value in iter_fields(value):
                if inner == 7:  # MetaGraphDef.object_graph_def
                    object_graph = inner_value
                elif inner == 2:  # MetaGraphDef.graph_def
                    graph_def = inner_value
            return object_graph, graph_def
    raise ProtoDecodeError("no meta graph")


def _object_graph(data: Any, limits: Limits, subject: str) -> tuple[list[_Node], dict[str, list[int]]]:
    nodes: list[_Node] = []
    concrete: dict[str, list[int]] = {}
    for number, _, value in iter_fields(data):
        if number == 1:  # SavedObjectGraph.nodes
            nodes.append(_saved_object(value))
            limits.check("max_objects", len(nodes), subject)
        elif number == 2:  # concrete_functions map entry
            key = ""
            bound: list[int] = []
            for entry_number, _, entry_value in iter_fields(value):
                if entry_number == 1:
                    key = as_text(entry_value)
                elif entry_number == 2:
                    for fn_number, _, fn_value in iter_fields(entry_value):
                        if fn_number == 2:  # SavedConcreteFunction.bound_inputs
                            bound.extend(iter_packed_varints(fn_value))
            concrete[key] = bound
    if not nodes:
        raise ProtoDecodeError("object graph has no nodes")
    # Every reader below indexes ``nodes`` by child id; TensorFlow's own loader would fail on a
    # reference past the end too, so the file is corrupt rather than partly readable.
    for index, node in enumerate(nodes):
        for child_id, _ in node.children:
            if child_id >= len(nodes):
                raise ProtoDecodeError(
                    f"object graph node {index} refers to node {child_id}, but the graph has {len(nodes)} nodes"
                )
    return nodes, concrete


def _saved_object(data: Any) -> _Node:
    node = _Node()
    for number, _, value in iter_fields(data):
        if number == 1:  # children: ObjectReference{node_id=1, local_name=2}
            node_id, name = 0, ""
            for ref_number, _, ref_value in iter_fields(value):
                if ref_number == 1:
                    node_id = as_int(ref_value)
                elif ref_number == 2:
                    name = as_text(ref_value)
            node.children.append((node_id, name))
        elif number == 4:
            node.kind = "user"
            for user_number, _, user_value in iter_fields(value):
                if user_number == 1:
                    node.identifier = as_text(user_value)
        elif number == 7:
            node.kind = "variable"
            node.variable = _saved_variable(value)
        elif number in (5, 6, 8, 9, 10, 12):
            node.kind = "function" if number in (6, 8) else "resource"
    return node


def _saved_variable(data: Any) -> dict[str, Any]:
    variable: dict[str, Any] = {"dtype": "float32", "shape": None, "trainable": False, "name": ""}
    for number, _, value in iter_fields(data):
        if number == 1:
            variable["dtype"] = _DTYPES.get(as_int(value), f"dtype{value}")
        elif number == 2:
            variable["shape"] = _shape(value)
        elif number == 3:
            variable["trainable"] = bool(as_int(value))
        elif number == 6:
            variable["name"] = as_text(value)
    return variable


def _shape(data: Any) -> tuple[int | None, ...] | None:
    dims: list[int | None] = []
    for number, _, value in iter_fields(data):
        if number == 2:  # TensorShapeProto.dim {size=1}
            size = -1
            for dim_number, _, dim_value in iter_fields(value):
                if dim_number == 1:
                    size = as_signed64(dim_value)
            dims.append(None if size < 0 else size)
        elif number == 3 and value:  # unknown_rank
            return None
    return tuple(dims)


# -- variables and their owners ---------------------------------------------------------------


def _find_variables(nodes: list[_Node]) -> tuple[list[int], dict[int, str]]:
    """Variable node ids in a stable order, each once, with its object-graph path.

    Keras 3 ``model.export`` tracks each variable twice (the ``variables`` lists and a
    private ``_all_variables`` list of other objects with the same names); its
    ``trainable_variables`` + ``non_trainable_variables`` are exactly ``model.weights``.
    """
    root_children = dict((name, node_id) for node_id, name in nodes[0].children)
    paths: dict[int, str] = {}
    if (
        "trainable_variables" in root_children
        and "non_trainable_variables" in root_children
        and nodes[0].identifier == "_generic_user_object"
    ):
        ordered = []
        for list_name in ("trainable_variables", "non_trainable_variables"):
            for node_id, name in nodes[root_children[list_name]].children:
                if nodes[node_id].kind == "variable" and node_id not in paths:
                    paths[node_id] = f"{list_name}/{name}"
                    ordered.append(node_id)
        if ordered:
            return ordered, _attribute_paths(nodes, paths)
    seen = {0}
    queue = deque([(0, "")])
    ordered = []
    while queue:
        node_id, path = queue.popleft()
        for child_id, name in nodes[node_id].children:
            if child_id in seen or name in _SKIP_EDGES:
                continue
            seen.add(child_id)
            child_path = f"{path}/{name}" if path else name
            if nodes[child_id].kind == "variable":
                paths[child_id] = child_path
                ordered.append(child_id)
            else:
                queue.append((child_id, child_path))
    return ordered, _attribute_paths(nodes, paths)


def _attribute_paths(nodes: list[_Node], paths: dict[int, str]) -> dict[int, str]:
    """Prefer a path through named attributes (``dense1/w``) over one through lists (``variables/0``)."""
    better = dict(paths)
    seen = {0}
    queue = deque([(0, "")])
    while queue:
        node_id, path = queue.popleft()
        for child_id, name in nodes[node_id].children:
            if child_id in seen or name in _SKIP_EDGES or name.endswith("variables"):
                continue
            seen.add(child_id)
            child_path = f"{path}/{name}" if path else name
            if child_id in better and not name.isdigit():
                better[child_id] = child_path
            elif nodes[child_id].kind != "variable":
                queue.append((child_id, child_path))
    return better


def _owners(nodes: list[_Node], variable_ids: list[int]) -> dict[int, tuple[int, str]]:
    """Variable → (node that holds it as a named attribute, attribute name)."""
    wanted = set(variable_ids)
    owners: dict[int, tuple[int, str]] = {}
    for node_id, node in enumerate(nodes):
        if node.kind != "user" or node.identifier in ("trackable_list_wrapper", "trackable_dict_wrapper"):
            continue
        for child_id, name in node.children:
            if child_id in wanted and not name.isdigit() and child_id not in owners:
                owners[child_id] = (node_id, name)
    return owners


def _record(
    node_id: int,
    node: _Node,
    object_path: str,
    owner: tuple[int, str] | None,
    layers: Mapping[int, dict[str, Any]],
    uses: tuple[str, ...],
    frozen: Set[int] = frozenset(),
) -> VariableRecord:
    variable = node.variable or {}
    name = variable.get("name") or ""
    name = name[:-2] if name.endswith(":0") else name
    # TF2 eager variables are not name-scoped (``w``); their object path (``dense1/w``) is then
    # the faithful one. Keras names are full paths (``dense1/kernel``).
    if "/" in name or object_path.startswith(("trainable_variables/", "non_trainable_variables/")):
        path = name or object_path
    else:
        path = object_path
    parts = path.split("/")
    leaf = parts[-1]
    layer_name = parts[-2] if len(parts) > 1 else None
    layer_class = None
    builtin = False
    parents: tuple[str, ...] = ()
    if owner is not None and owner[0] in layers:
        meta = layers[owner[0]]
        layer_class = meta.get("class_name")
        layer_name = meta.get("name", layer_name)
        builtin = is_builtin_entry(meta) or ("module" not in meta and isinstance(layer_class, str))
    hint = None
    if layer_class is None and layer_name:
        candidates = keras_class_name_candidates(layer_name)
        hint = candidates[0] if candidates else None
    origin = f"object graph node {node_id}"
    if owner is not None:
        origin += f" (attribute {owner[1]!r})"
    shape = variable.get("shape")
    trainable = bool(variable.get("trainable"))
    if object_path.startswith("non_trainable_variables/"):
        # Keras 3 ``model.export``: a frozen layer's variable keeps ``tf.Variable.trainable`` True
        # (Keras 3.15 only stops handing it to the optimizer), but the export's own
        # ``non_trainable_variables`` list, which is ``model.non_trainable_weights``, holds it.
        trainable = False
    if owner is not None and owner[0] in frozen:
        trainable = False
    return VariableRecord(
        path=path,
        leaf=leaf,
        layer=layer_name,
        layer_class=layer_class if isinstance(layer_class, str) else None,
        shape=shape if shape is not None else (),
        dtype=variable.get("dtype", "float32"),
        trainable=trainable,
        origin=origin,
        leaf_known=True,
        parent_classes=parents,
        layer_builtin=builtin,
        graph_uses=uses,
        class_hint=hint,
    )


# -- trainability ------------------------------------------------------------------------------

_KERAS3_LAYER_EDGES = frozenset({"_build_shapes_dict", "call_signature_parameters", "_call_has_context_arg"})
"""Attributes every Keras 3 layer tracks, which ``tf.saved_model.save`` writes into the object graph."""


def _trainability_from_object_graph(
    nodes: list[_Node], variable_ids: list[int], records: list[VariableRecord]
) -> tuple[list[VariableRecord], int]:
    """Trainability where a SavedModel without ``keras_metadata.pb`` (``tf.saved_model.save`` of a
    Keras model) records it, and "unknown" where it does not; with the count of unknown ones.

    A tf_keras model tracks its ``trainable_variables`` list (``model.trainable_variables``, which
    leaves out frozen layers' variables, whose tf.Variable flag stays True): membership is the
    answer. A Keras 3 model tracks no such list, and a frozen layer's variables keep the flag True
    (Keras 3.15 only stops handing them to the optimizer), so a True flag says nothing: unknown. A
    False flag (a variable created non-trainable, BatchNormalization's moving statistics) stays
    known. A plain ``tf.Module``'s flag is what ``tf.Module.trainable_variables`` reads: kept."""
    root = dict((name, node_id) for node_id, name in nodes[0].children)
    if "trainable_variables" in root and "keras_api" in root:
        listed = {child for child, _ in nodes[root["trainable_variables"]].children}
        return [
            dataclasses.replace(r, trainable=node_id in listed) if r.trainable != (node_id in listed) else r
            for node_id, r in zip(variable_ids, records)
        ], 0
    keras3 = any(name in _KERAS3_LAYER_EDGES for node in nodes for _, name in node.children)
    if not keras3:
        return records, 0
    marked = [dataclasses.replace(r, trainable_known=False) if r.trainable else r for r in records]
    return marked, sum(1 for r in marked if not r.trainable_known)


# -- one path per variable ------------------------------------------------------------------

_SCOPED = re.compile(r"^([a-z0-9_]*?)_(\d+)$")
_KERAS_LEAVES = frozenset(slot.leaf for slots in LAYER_VARIABLES.values() for slot in slots)


def _unique_paths(
    records: list[VariableRecord], variable_ids: list[int], reads: Mapping[int, set[str]]
) -> tuple[list[VariableRecord], int, int]:
    """Give variables that share a ``tf.Variable`` name the path of their layer.

    Keras 3 (3.15, TF backend) names a ``tf.Variable`` by the name scope it was created in: layers
    built inside another layer's ``build`` all get that layer's scope, so a T5 block's seven
    kernels are all ``transformer_encoder_layer_0/kernel``. The saved functions still read each one
    inside its own call scope: ``t5_backbone_1/transformer_encoder_layer_0_1/self_attention_1/
    query_projector_1/Cast/ReadVariableOp``. Each layer scope there is the layer's name plus a
    ``_N`` uniquifier; the scope just above ``ReadVariableOp`` is the consuming op's. Reading the
    layers from the one matching the variable's first name component on gives the Keras path
    (``transformer_encoder_layer_0/self_attention/query_projector/kernel``); of several reads, the
    shortest wins (a parent's variable is sometimes read inside a child's scope). Names that are
    unique are left alone unless their leaf is a Keras layer's own (``kernel``, ``gamma``): a
    Swin ``patch_embedding/kernel`` is the kernel of ``patch_embedding/conv_projection``, while a
    custom leaf (XLNet's ``content_attention_bias``) belongs to the layer it was created in, even
    when a sublayer reads it. Paths still shared afterwards are numbered.
    """
    counts: dict[str, int] = {}
    for record in records:
        counts[record.path] = counts.get(record.path, 0) + 1
    renamed = 0
    result = list(records)
    for index, (record, node_id) in enumerate(zip(records, variable_ids)):
        if (counts[record.path] < 2 and record.leaf not in _KERAS_LEAVES) or node_id not in reads:
            continue
        rebuilt = _path_from_reads(record.path, reads.get(node_id, ()))
        if rebuilt and rebuilt != record.path:
            parts = rebuilt.split("/")
            result[index] = dataclasses.replace(record, path=rebuilt, layer=parts[-2] if len(parts) > 1 else None)
            renamed += 1
    seen: dict[str, int] = {}
    numbered = 0
    for index, record in enumerate(result):
        seen[record.path] = seen.get(record.path, 0) + 1
        if seen[record.path] > 1:
            result[index] = dataclasses.replace(record, path=f"{record.path}#{seen[record.path]}")
            numbered += 1
    return result, renamed, numbered


def _path_from_reads(name: str, read_nodes: Iterable[str]) -> str | None:
    parts = name.split("/")
    first, leaf = parts[0], parts[-1]
    best: str | None = None
    for node_name in read_nodes:
        scopes = node_name.split("/")
        if not scopes[-1].startswith("ReadVariableOp"):
            continue
        scopes = scopes[:-2]  # the read, and the scope of the op that consumes it
        for position, scope in enumerate(scopes):
            match = _SCOPED.match(scope)
            if scope == first or (match and match.group(1) == first):
                layers = [first]
                for inner in scopes[position + 1 :]:
                    inner_match = _SCOPED.match(inner)
                    if not inner_match:
                        break
                    layers.append(inner_match.group(1))
                candidate = "/".join(layers + [leaf])
                if best is None or len(candidate) < len(best):
                    best = candidate
                break
    return best
