"""Batches for the probe: the set-up's own data, or synthetic batches shaped from the model.

Nothing is downloaded. A synthetic batch follows the model's real input structure (the
dict, list or nesting a functional model was built with, ``_inputs_struct``, not the flat
``model.inputs``, which Keras 3.15 sorts by name), and each input gets values its layers
accept:

- integer ids stay below the smallest embedding table the input reaches in the layer
  graph (a BERT's ``segment_ids`` feed a 2-row table, its ``token_ids`` a vocabulary-sized
  one), and below the positional tables' ``sequence_length`` in length;
- integer or boolean inputs that reach no table (``padding_mask``) are all ones: every
  position valid;
- targets fit the loss the step minimises (``data_loss``, else the compiled loss): kinds
  are tried in the order the loss's name suggests (class ids for "sparse" losses,
  probabilities for cross-entropies, real values otherwise) and the first that gives a
  finite loss is kept.

A set-up can hand its own data instead (``batch`` or ``dataset`` in the set-up dict).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from decay_audit.kinds import TextEnum
from decay_audit.probe.setup import SetupError, Stage, TrainingSetup, at_stage, describe_exception

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


class TargetKind(TextEnum):
    REAL = "real"
    """Normal random values shaped like the output (regression losses)."""
    PROBABILITY = "probability"
    """Uniform values in [0, 1] shaped like the output (cross-entropies, hinge)."""
    SPARSE = "sparse"
    """Integer class ids, the output's shape without its last axis (sparse cross-entropies)."""


# -- inputs ---------------------------------------------------------------------------------------


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
    sizes = [_table_size(layer)] + [_table_size(inner) for inner in _sublayers(layer)]
    sizes = [size for size in sizes if size is not None]
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
            lambda t: InputSpec(str(getattr(t, "name", "")), _shape_tuple(t.shape), _dtype_name(t),
                                vocabularies.get(id(t)), id(t) in vocabularies), structure)
    return _built_structure(model)


def _shape_tuple(shape: Any) -> tuple[int | None, ...]:
    dims = shape.as_list() if hasattr(shape, "as_list") else shape  # tf.TensorShape (tf_keras)
    return tuple(None if d is None else int(d) for d in dims)


def _is_shape(value: Any) -> bool:
    return isinstance(value, (tuple, list)) and all(
        isinstance(d, (int, np.integer, type(None))) and not isinstance(d, bool) for d in value)


def _built_structure(model: Any) -> Any:
    """A subclassed model has no graph: the shapes it was built with, dtypes from the layers it owns."""
    shapes = getattr(model, "_build_shapes_dict", None) or {}
    if len(shapes) != 1:
        raise ValueError("cannot tell the model's input structure (a subclassed model that was never built or "
                         "called): call it once, or hand a batch ('batch' or 'dataset' in the set-up dict)")
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
    return tuple((batch_size if index == 0 else open_size) if d is None else int(d)
                 for index, d in enumerate(spec.shape))


@dataclass(frozen=True)
class InputPlan:
    """How to draw the model's inputs for every step (read from the model once)."""

    structure: Any
    """The model's input structure with :class:`InputSpec` leaves."""
    sequence: int
    """Length given to open sequence dimensions."""

    def draw(self, batch_size: int, rng: np.random.Generator) -> Any:
        import keras

        return keras.tree.map_structure(lambda spec: _draw_input(spec, batch_size, self.sequence, rng),
                                        self.structure)


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


def synthetic_inputs(model: Any, batch_size: int, rng: np.random.Generator) -> Any:
    return plan_inputs(model).draw(batch_size, rng)


# -- targets --------------------------------------------------------------------------------------


def _loss_text(loss: Any) -> str:
    """What a loss calls itself (string id, Loss name, class, wrapped function), lower-case, for hints."""
    if loss is None:
        return ""
    if isinstance(loss, str):
        return loss.lower()
    parts = [type(loss).__name__, str(getattr(loss, "name", "") or ""), str(getattr(loss, "__name__", "") or "")]
    wrapped = getattr(loss, "fn", None) or getattr(loss, "python_function", None)
    if wrapped is not None:
        parts.append(str(getattr(wrapped, "__name__", "")))
    return " ".join(parts).lower()


def _order(hint: str) -> list[TargetKind]:
    if "sparse" in hint:
        return [TargetKind.SPARSE, TargetKind.PROBABILITY, TargetKind.REAL]
    if any(word in hint for word in ("entropy", "hinge", "kl_div", "kldiv", "poisson", "focal", "dice")):
        return [TargetKind.PROBABILITY, TargetKind.SPARSE, TargetKind.REAL]
    return [TargetKind.REAL, TargetKind.PROBABILITY, TargetKind.SPARSE]


def _shape(y_pred: Any) -> tuple[int, ...]:
    return tuple(int(d) for d in y_pred.shape)


def make_target(kind: TargetKind, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if kind is TargetKind.SPARSE:
        return rng.integers(0, max(shape[-1], 1) if shape else 1, size=shape[:-1]).astype("int32")
    if kind is TargetKind.PROBABILITY:
        return rng.uniform(0, 1, size=shape).astype("float32")
    return rng.normal(size=shape).astype("float32")


def _finite(value: Any) -> bool:
    import keras

    try:
        return all(bool(np.all(np.isfinite(keras.ops.convert_to_numpy(v)))) for v in keras.tree.flatten(value))
    except (TypeError, ValueError):
        return False


def _per_output_losses(model: Any, y_pred: Any) -> Any:
    """The compiled loss of each output, in y_pred's structure (None where it cannot be told)."""
    loss = getattr(model, "loss", None)
    names = list(getattr(model, "output_names", None) or [])

    def of(key: Any, index: int) -> Any:
        if isinstance(loss, dict):
            if key in loss:
                return loss[key]
            return loss.get(names[index]) if index < len(names) else None
        if isinstance(loss, (list, tuple)):
            return loss[index] if index < len(loss) else None
        return loss

    if isinstance(y_pred, dict):
        return {key: of(key, index) for index, key in enumerate(y_pred)}
    if isinstance(y_pred, (list, tuple)):
        return [of(index, index) for index in range(len(y_pred))]
    return of(0, 0)


def _callable_loss(loss: Any) -> Any:
    import keras

    if loss is None:
        return None
    try:
        return keras.losses.get(loss) if isinstance(loss, (str, dict)) else loss if callable(loss) else None
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class TargetPlan:
    """How to draw targets for every step: a kind and shape per output, in y_pred's structure."""

    structure: Any
    """y_pred's structure with (TargetKind, shape) leaves."""

    def draw(self, rng: np.random.Generator) -> Any:
        return _map_outputs(lambda leaf: make_target(leaf[0], leaf[1], rng), self.structure)


def _is_leaf(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], TargetKind)


def _map_outputs(function: Any, *structures: Any) -> Any:
    """Map over y_pred's outputs (tensors are leaves; dicts and lists are containers)."""
    first = structures[0]
    if isinstance(first, dict):
        return {key: _map_outputs(function, *(s[key] for s in structures)) for key in first}
    if isinstance(first, (list, tuple)) and not _is_leaf(first):
        return type(first)(_map_outputs(function, *(s[i] for s in structures)) for i in range(len(first)))
    return function(*structures)


def plan_targets(model: Any, x: Any, y_pred: Any, data_loss: Any, rng: np.random.Generator) -> TargetPlan:
    """Pick the target kind the loss accepts: the first that gives a finite loss, in the order the loss's
    name suggests. ``data_loss`` is tried on the whole structure; a compiled loss output by output, then
    as a whole through ``compute_loss``; without any loss the probe uses MSE, so real values."""
    tried: list[str] = []

    def uniform(kind: TargetKind) -> TargetPlan:
        return TargetPlan(_map_outputs(lambda output: (kind, _shape(output)), y_pred))

    if data_loss is not None:
        for kind in _order(_loss_text(data_loss)):
            plan = uniform(kind)
            if _accepts(lambda y: data_loss(y, y_pred), plan.draw(rng), tried):
                return plan
        raise ValueError(_no_fit(tried))

    def choose(loss_fn: Any, output: Any) -> tuple[TargetKind, tuple[int, ...]]:
        shape = _shape(output)
        kinds = _order(_loss_text(loss_fn))
        if loss_fn is None:
            return kinds[0], shape
        for kind in kinds:
            if _accepts(lambda y: loss_fn(y, output), make_target(kind, shape, rng), tried):
                return kind, shape
        return kinds[0], shape

    losses = _map_outputs(lambda loss, _: _callable_loss(loss), _per_output_losses(model, y_pred), y_pred)
    plan = TargetPlan(_map_outputs(choose, losses, y_pred))
    compiled = getattr(model, "compiled", False) or getattr(model, "_is_compiled", False)  # Keras 3 / tf_keras
    if not (compiled and getattr(model, "loss", None) is not None and hasattr(model, "compute_loss")):
        return plan
    import inspect

    try:
        takes_training = "training" in inspect.signature(model.compute_loss).parameters
    except (TypeError, ValueError):
        takes_training = False

    def whole(y: Any) -> Any:
        if takes_training:  # Keras 3; tf_keras 2.21's compute_loss has no training argument
            return model.compute_loss(x=x, y=y, y_pred=y_pred, training=False)
        import tensorflow as tf  # tf_keras' compiled loss reads y.shape.rank: tensors, as fit makes them

        return model.compute_loss(x=x, y=tf.nest.map_structure(tf.convert_to_tensor, y), y_pred=y_pred)

    for candidate in [plan] + [uniform(kind) for kind in TargetKind]:
        if _accepts(whole, candidate.draw(rng), tried):
            return candidate
    raise ValueError(_no_fit(tried))


def _no_fit(tried: list[str]) -> str:
    return ("no synthetic target fits the loss (tried " + "; ".join(dict.fromkeys(tried))[:400]
            + "): hand a batch ('batch' or 'dataset' in the set-up dict)")


def _accepts(loss: Any, y: Any, tried: list[str]) -> bool:
    try:
        if _finite(loss(y)):
            return True
        tried.append("non-finite loss")
    except Exception as exc:  # noqa: BLE001
        tried.append(describe_exception(exc, 160))
    return False


# -- batches --------------------------------------------------------------------------------------


def _split(element: Any) -> tuple[Any, Any]:
    """An element as Keras' ``fit`` reads it (``keras.utils.unpack_x_y_sample_weight``): a tuple or list
    of 1-3 is ``(x[, y[, sample_weight]])``, anything else is ``x`` alone. Sample weights scale the loss,
    not which variables decay, so they are dropped."""
    import keras

    x, y, _ = keras.utils.unpack_x_y_sample_weight(element)
    return x, y


def _is_stream(data: Any) -> bool:
    if isinstance(data, (tuple, list, dict, np.ndarray)) or hasattr(data, "shape"):
        return False
    return hasattr(data, "element_spec") or hasattr(data, "__next__") or (
        hasattr(data, "__getitem__") and hasattr(data, "__len__")) or hasattr(data, "__iter__")


class BatchSource:
    """One ``(x, y)`` per probe step, from the set-up's own data or synthetic.

    A finite dataset or iterator is read from the start again when it runs out (a
    generator cannot be, so it must yield as many batches as there are steps).
    """

    def __init__(self, setup: TrainingSetup, batch_size: int = 4, rng: np.random.Generator | None = None):
        self.setup = setup
        self.batch_size = batch_size
        self.rng = rng or np.random.default_rng(0)
        self.subject = setup.description or str(getattr(setup.model, "name", "model"))
        self._plan: TargetPlan | None = None
        self._inputs: InputPlan | None = None
        self._iterator: Iterator[Any] | None = None
        self._index = 0
        self._peeked: tuple[Any, Any] | None = None

    def __iter__(self) -> BatchSource:
        return self

    def __next__(self) -> tuple[Any, Any]:
        return self.next()

    def peek(self) -> tuple[Any, Any]:
        """The next batch without consuming it (verify builds an unbuilt model with it)."""
        if self._peeked is None:
            self._peeked = self.next()
        return self._peeked

    def next(self) -> tuple[Any, Any]:
        if self._peeked is not None:
            batch, self._peeked = self._peeked, None
            return batch
        with at_stage(Stage.BATCH, self.subject):
            data = self.setup.batch
            if data is None:
                from decay_audit.probe.backends.tf_keras import own_loss_labels, signature_inputs

                x = signature_inputs(self.setup.model, self.batch_size, self.rng)
                if x is not None:  # tf_keras without model.inputs: transformers, subclassed
                    y = own_loss_labels(self.setup.model, x, self.rng)
                    return x, (self._targets(x) if y is None else y)
                if self._inputs is None:
                    self._inputs = plan_inputs(self.setup.model)
                x, y = self._inputs.draw(self.batch_size, self.rng), None
            else:
                x, y = _split(self._next_element(data) if _is_stream(data) else data)
                x, y = self._preprocessed(x, y)
            if y is None:
                y = self._targets(x)
            return x, y

    def _preprocessed(self, x: Any, y: Any) -> tuple[Any, Any]:
        """keras_hub task models (``PipelineModel``) run ``preprocess_samples`` on every batch in ``fit``
        (keras_hub 0.32 ``utils/pipeline_model.py``): raw text becomes token ids there, so a set-up's
        own batch of strings goes through it here too. A task with ``preprocessor=None`` passes it on."""
        model = self.setup.model
        if getattr(model, "preprocessor", None) is None or not callable(getattr(model, "preprocess_samples", None)):
            return x, y
        import keras

        packed = model.preprocess_samples(x, y)
        x, y, _ = keras.utils.unpack_x_y_sample_weight(packed)
        return x, y

    def _next_element(self, data: Any) -> Any:
        if hasattr(data, "__getitem__") and hasattr(data, "__len__") and not hasattr(data, "element_spec"):
            if len(data) == 0:
                raise SetupError(self.subject, "the set-up's dataset holds no batches", Stage.BATCH)
            element = data[self._index % len(data)]
            self._index += 1
            return element
        if self._iterator is None:
            self._iterator = iter(data)
        try:
            return next(self._iterator)
        except StopIteration:
            restarted = iter(data)
            if restarted is self._iterator:  # a generator or iterator: it cannot start over
                raise SetupError(self.subject, "the set-up's iterator ran out: it must yield one batch per "
                                               "probe step", Stage.BATCH) from None
            self._iterator = restarted
        try:
            return next(self._iterator)
        except StopIteration:
            raise SetupError(self.subject, "the set-up's dataset yields no batches", Stage.BATCH) from None

    def _targets(self, x: Any) -> Any:
        if self._plan is None:
            y_pred = self.setup.model(x, training=False)
            self._plan = plan_targets(self.setup.model, x, y_pred, self.setup.data_loss, self.rng)
        return self._plan.draw(self.rng)


def synthetic_batch(model: Any, batch_size: int, rng: np.random.Generator) -> tuple[Any, Any]:
    """One synthetic ``(x, y)`` for a compiled model (targets fit its compiled loss)."""
    return BatchSource(TrainingSetup(model, None), batch_size, rng).next()
