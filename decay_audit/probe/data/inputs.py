"""Synthetic inputs that follow the model's own input structure, so a set-up without data can
still be probed: the probe downloads nothing and must feed each input values its layers accept.

The structure is the dict, list or nesting a functional model was built with
(``_inputs_struct``, not the flat ``model.inputs``, which Keras 3.15 sorts by name), and:

- integer ids stay below the smallest embedding table the input reaches in the layer
  graph (a BERT's ``segment_ids`` feed a 2-row table, its ``token_ids`` a vocabulary-sized
  one), and below the positional tables' ``sequence_length`` in length;
- integer or boolean inputs that reach no table (``padding_mask``) are all ones: every
  position valid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_SEQUENCE = 8
"""Length given to unknown (None) sequence dimensions, capped by positional tables."""
DEFAULT_SPATIAL = 32
"""Size given to unknown spatial dimensions of image-like (rank >= 4) float inputs."""


@dataclass(frozen=True)
class InputSpec:
    """What one model input needs, read from the model."""

    name: str
    shape: tuple[int | None, ...]
    """With None for the batch dimension and any other dimension the model leaves open."""
    dtype: str
    vocabulary: int | None
    """Exclusive upper bound for integer ids: the smallest embedding table the input reaches (None: reaches none)."""
    reaches_table: bool
    """Whether the layer graph shows this input feeding an embedding table (False: unknown or a mask)."""


def _graph_inputs(layer: Any) -> Any:
    """The input structure of the functional graph behind a layer, or None (no graph).

    Keras 3 Functional keeps it as ``_inputs_struct`` (a built Sequential in its ``_functional``);
    tf_keras 2.21 Functional (and Sequential) as ``_nested_inputs``.
    """
    for graph in (layer, getattr(layer, "_functional", None)):
        if graph is None:
            continue
        for attribute in ("_inputs_struct", "_nested_inputs"):
            structure = getattr(graph, attribute, None)
            if structure is not None:
                return structure
    return None


def _node_inputs(node: Any) -> list[Any]:
    """The symbolic tensors a graph node consumed (Keras 3 ``arguments``, tf_keras ``keras_inputs``)."""
    arguments = getattr(node, "arguments", None)
    if arguments is not None:
        return list(arguments.keras_tensors)
    try:
        return list(getattr(node, "keras_inputs", []) or [])
    except (AttributeError, TypeError, ValueError):
        return []


def _sublayers(model: Any) -> list[Any]:
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return []
    try:
        return list(flatten(include_self=False))
    except TypeError:
        return []


def _table_size(layer: Any) -> int | None:
    """Rows of a lookup table indexed by ids (keras Embedding and subclasses, CategoryEncoding)."""
    for attribute in ("input_dim", "num_tokens"):
        value = getattr(layer, attribute, None)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
            return int(value)
    return None


def _sequence_bound(model: Any) -> int:
    """Positional tables (keras_hub PositionEmbedding, TokenAndPositionEmbedding) cap the length."""
    bounds = [DEFAULT_SEQUENCE]
    for layer in _sublayers(model):
        value = getattr(layer, "sequence_length", None)
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value > 0:
            bounds.append(int(value))
    return min(bounds)


def _is_integer(dtype: str) -> bool:
    return "int" in dtype or dtype == "bool"


def _dtype_name(tensor: Any) -> str:
    dtype = getattr(tensor, "dtype", "float32")
    return str(getattr(dtype, "name", dtype))


def _flat(structure: Any) -> list[Any]:
    import keras

    return keras.tree.flatten(structure)


def _call_inputs(node: Any) -> Any:
    arguments = getattr(node, "arguments", None)
    if arguments is None:  # tf_keras
        args, kwargs = getattr(node, "call_args", ()), getattr(node, "call_kwargs", {}) or {}
    else:
        args, kwargs = arguments.args, arguments.kwargs
    if args:
        return args[0]
    return kwargs.get("inputs")


def _nested_links(model: Any) -> dict[int, list[Any]]:
    """Inner input tensor of every nested graph (a backbone inside a task) -> the outer tensors fed to it."""
    links: dict[int, list[Any]] = {}
    for layer in _sublayers(model):
        inner = _graph_inputs(layer)
        if inner is None:
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            outer = _call_inputs(node)
            if outer is None:
                continue
            if isinstance(inner, dict) and isinstance(outer, dict):
                pairs = [(inner[k], outer[k]) for k in inner if k in outer]
            else:
                flat_inner, flat_outer = _flat(inner), _flat(outer)
                if len(flat_inner) != len(flat_outer):
                    continue
                pairs = list(zip(flat_inner, flat_outer))
            for inner_tensor, outer_tensor in pairs:
                links.setdefault(id(inner_tensor), []).append(outer_tensor)
    return links


def _origins(tensor: Any, targets: set[int], links: dict[int, list[Any]]) -> set[int]:
    """The model inputs (ids in ``targets``) a symbolic tensor is computed from."""
    found, seen, stack = set(), set(), [tensor]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if id(current) in targets:
            found.add(id(current))
            continue
        if id(current) in links:
            stack.extend(links[id(current)])
            continue
        history = getattr(current, "_keras_history", None)
        if history is None:
            continue
        operation, node_index = history[0], history[1]
        nodes = getattr(operation, "_inbound_nodes", [])
        if node_index < len(nodes):
            stack.extend(_node_inputs(nodes[node_index]))
    return found


def _tables_within(layer: Any) -> int | None:
    """The smallest table a layer looks ids up in: its own, or one of its sublayers' when it is a
    subclassed layer (keras_hub TokenAndPositionEmbedding holds its Embedding as a sublayer, which
    Keras 3 never records as a graph node). A nested functional graph is traced through instead."""
    if _graph_inputs(layer) is not None:
        return None
    all_sizes = [_table_size(layer)] + [_table_size(inner) for inner in _sublayers(layer)]
    sizes = [size for size in all_sizes if size is not None]
    return min(sizes) if sizes else None


def _vocabularies(model: Any, inputs: list[Any]) -> dict[int, int]:
    """Per model input (by id), the smallest table it feeds as integer ids, traced through the graph."""
    targets = {id(t) for t in inputs}
    links = _nested_links(model)
    smallest: dict[int, int] = {}
    for layer in _sublayers(model):
        size = _tables_within(layer)
        if size is None:
            continue
        for node in getattr(layer, "_inbound_nodes", []):
            tensors = _node_inputs(node)
            if not tensors or not _is_integer(_dtype_name(tensors[0])):
                continue  # a tied embedding called on floats (reverse projection) is no lookup
            for origin in _origins(tensors[0], targets, links):
                smallest[origin] = min(size, smallest.get(origin, size))
    return smallest


def input_structure(model: Any) -> Any:
    """The model's inputs as :class:`InputSpec` leaves, in the structure the model is called with."""
    structure = _graph_inputs(model)
    if structure is not None:
        tensors = _flat(structure)
        vocabularies = _vocabularies(model, tensors)
        import keras

        return keras.tree.map_structure(
            lambda t: InputSpec(
                str(getattr(t, "name", "")),
                _shape_tuple(t.shape),
                _dtype_name(t),
                vocabularies.get(id(t)),
                id(t) in vocabularies,
            ),
            structure,
        )
    return _built_structure(model)


def _shape_tuple(shape: Any) -> tuple[int | None, ...]:
    dims = shape.as_list() if hasattr(shape, "as_list") else shape  # tf.TensorShape (tf_keras)
    return tuple(None if d is None else int(d) for d in dims)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        isinstance(d, (int, np.integer, type(None))) and not isinstance(d, bool) for d in value
    )


def _built_structure(model: Any) -> Any:
    """A subclassed model has no graph: the shapes it was built with, dtypes from the layers it owns."""
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) != 1:
        raise ValueError(
            "cannot tell the model's input structure (a subclassed model that was never built or "
            "called): call it once, or hand a batch ('batch' or 'dataset' in the set-up dict)"
        )
    tables = [size for size in (_table_size(layer) for layer in _sublayers(model)) if size is not None]
    vocabulary = min(tables) if tables else None

    def spec(shape: Any, name: str) -> InputSpec:
        # Without a graph, an embedding table and rank-2 (batch, time) inputs are the evidence for ids.
        ids = vocabulary is not None and len(shape) == 2
        return InputSpec(name, tuple(shape), "int32" if ids else "float32", vocabulary if ids else None, ids)

    def walk(value: Any, name: str) -> Any:
        if _is_shape(value):
            return spec(value, name)
        if isinstance(value, dict):
            return {key: walk(item, str(key)) for key, item in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(item, f"{name}_{index}") for index, item in enumerate(value))
        raise ValueError(f"cannot read the model's build shape {value!r}: hand a batch ('batch' in the set-up dict)")

    name, shape = next(iter(shapes.items()))
    return walk(shape, name.removesuffix("_shape"))


def _concrete(spec: InputSpec, batch_size: int, sequence: int) -> tuple[int, ...]:
    open_size = sequence if (_is_integer(spec.dtype) or len(spec.shape) <= 3) else DEFAULT_SPATIAL
    return tuple(
        (batch_size if index == 0 else open_size) if d is None else int(d) for index, d in enumerate(spec.shape)
    )


@dataclass(frozen=True)
class InputPlan:
    """How to draw the model's inputs for every step (read from the model once)."""

    structure: Any
    """The model's input structure with :class:`InputSpec` leaves."""
    sequence: int
    """Length given to open sequence dimensions."""

    def draw(self, batch_size: int, rng: np.random.Generator) -> Any:
        import keras

        return keras.tree.map_structure(lambda spec: _draw_input(spec, batch_size, self.sequence, rng), self.structure)


def _draw_input(spec: InputSpec, batch_size: int, sequence: int, rng: np.random.Generator) -> np.ndarray:
    shape = _concrete(spec, batch_size, sequence)
    if spec.dtype == "bool":
        return np.ones(shape, dtype=bool)
    if spec.dtype == "string":  # raw text for an in-model TextVectorization / lookup: a few short words
        words = np.array([f"w{i}" for i in range(8)])
        return np.array([" ".join(rng.choice(words, size=4)) for _ in range(int(np.prod(shape)))]).reshape(shape)
    if _is_integer(spec.dtype):
        if spec.vocabulary is None:  # reaches no table: a mask, all positions valid
            return np.ones(shape, dtype=spec.dtype)
        return rng.integers(0, spec.vocabulary, size=shape).astype(spec.dtype)
    if "mask" in spec.name.lower():
        return np.ones(shape, dtype="float32")
    return rng.normal(size=shape).astype("float64" if spec.dtype == "float64" else "float32")


def plan_inputs(model: Any) -> InputPlan:
    return InputPlan(input_structure(model), _sequence_bound(model))
