"""Inventory of a live ``keras.Model`` / ``keras.Layer`` or ``tf.Module`` handed to the API.

This is also the "build path" of a file: the model Keras builds from a config gives
the reference inventory that the metadata loaders are tested against.
"""

from __future__ import annotations

from typing import Any

from decay_audit.errors import ModelLoadError
from decay_audit.inventory import Inventory, VariableRecord
from decay_audit.loaders.interface import LoaderName


def is_keras_object(obj: Any) -> bool:
    return any(
        cls.__module__.startswith(("keras.", "tf_keras.")) and cls.__name__ in ("Layer", "Operation")
        for cls in type(obj).__mro__
    )


def is_tf_module(obj: Any) -> bool:
    return any(cls.__name__ == "Module" and cls.__module__.startswith("tensorflow") for cls in type(obj).__mro__)


def load_live(obj: Any, source: str | None = None) -> Inventory:
    if is_keras_object(obj):
        return _load_keras(obj, source)
    if is_tf_module(obj):
        return _load_module(obj, source)
    raise ModelLoadError(repr(type(obj)), "not a keras.Model, keras.Layer or tf.Module")


def _variable_path(variable: Any) -> str:
    path = getattr(variable, "path", None) or variable.name
    return path[:-2] if path.endswith(":0") else path


def _owned(layer: Any) -> list[Any]:
    own = getattr(layer, "_trainable_variables", None)
    if own is None:  # tf_keras
        return list(getattr(layer, "_trainable_weights", [])) + list(getattr(layer, "_non_trainable_weights", []))
    return list(own) + list(getattr(layer, "_non_trainable_variables", []))


def _load_keras(model: Any, source: str | None) -> Inventory:
    owners: dict[int, tuple[Any, tuple[str, ...]]] = {}

    def visit(layer: Any, parents: tuple[str, ...]) -> None:
        for variable in _owned(layer):
            owners.setdefault(id(variable), (layer, parents))
        inner = parents + (type(layer).__name__,)
        for child in _sublayers(layer):
            visit(child, inner)

    visit(model, ())
    weights = list(model.weights)
    if not weights and not getattr(model, "built", True):
        raise ModelLoadError(source or repr(model), "model is not built: call it once or build(input_shape) first")
    records = []
    seen: set[int] = set()
    for variable in weights:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        layer, parents = owners.get(id(variable), (None, ()))
        records.append(_keras_record(variable, layer, parents))
    name = getattr(model, "name", None)
    return Inventory(
        source=source or f"<live {type(model).__name__} {name!r}>",
        loader=LoaderName.LIVE_KERAS.value,
        records=tuple(records),
        model_name=name,
    )


def _sublayers(layer: Any) -> list[Any]:
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is None:
        return []
    try:
        return list(flatten(include_self=False, recursive=False))
    except TypeError:
        return []


def _keras_record(variable: Any, layer: Any, parents: tuple[str, ...]) -> VariableRecord:
    path = _variable_path(variable)
    leaf = path.rsplit("/", 1)[-1]
    layer_class = type(layer).__name__ if layer is not None else None
    module = type(layer).__module__ if layer is not None else ""
    return VariableRecord(
        path=path,
        leaf=leaf,
        layer=getattr(layer, "name", None),
        layer_class=layer_class,
        shape=tuple(None if d is None else int(d) for d in variable.shape),
        dtype=_dtype_name(variable.dtype),
        trainable=bool(variable.trainable),
        origin=f"{layer_class}.{leaf}" if layer_class else path,
        leaf_known=True,
        parent_classes=tuple(p for p in parents if p not in ("Functional", "Sequential")),
        layer_builtin=module.startswith(("keras.", "tf_keras.")),
    )


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None) or str(dtype)
    return name.removeprefix("<dtype: '").removesuffix("'>")


_PASS_THROUGH = frozenset({"Identity", "Cast", "ReadVariableOp", "Reshape", "ExpandDims"})


def _traced_functions(module: Any, tf: Any) -> list[Any]:
    """tf.function methods of the module and its submodules, bound to their owners."""
    found = []
    for owner in (module, *module.submodules):
        for name in dir(type(owner)):
            if isinstance(getattr(type(owner), name, None), tf.types.experimental.PolymorphicFunction):
                found.append(getattr(owner, name))
    return found


def _module_graph_uses(module: Any, variables: list[Any]) -> dict[int, set[str]]:
    """``Op:input`` uses of each variable in the module's traced tf.functions.

    Only functions with an input signature (or already traced) are looked at: tracing
    a function without one would need example inputs, and calling user code to get them
    is not a scan's business.
    """
    import tensorflow as tf

    by_handle = {id(v.handle): id(v) for v in variables if hasattr(v, "handle")}
    uses: dict[int, set[str]] = {}
    functions = []
    for bound in _traced_functions(module, tf):
        try:
            if bound.input_signature is not None:
                functions.append(bound.get_concrete_function())
            functions.extend(bound._list_all_concrete_functions())
        except Exception:  # noqa: BLE001 - evidence only; a function that cannot be traced is skipped
            continue
    for concrete in functions:
        for external, internal in concrete.graph.captures:
            variable_id = by_handle.get(id(external))
            if variable_id is None:
                continue
            frontier = [internal]
            for _ in range(4):
                next_frontier = []
                for tensor in frontier:
                    for consumer in tensor.consumers():
                        if consumer.type in _PASS_THROUGH:
                            next_frontier.extend(consumer.outputs)
                        else:
                            position = next(i for i, t in enumerate(consumer.inputs) if t is tensor)
                            uses.setdefault(variable_id, set()).add(f"{consumer.type}:{position}")
                frontier = next_frontier
    return uses


def _load_module(module: Any, source: str | None) -> Inventory:
    import tensorflow as tf

    variables = [v for _, v in module._flatten(with_path=True, predicate=lambda v: isinstance(v, tf.Variable))]
    graph_uses = _module_graph_uses(module, variables)
    records = []
    seen: set[int] = set()
    for path_parts, variable in module._flatten(with_path=True, predicate=lambda v: isinstance(v, tf.Variable)):
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        object_path = "/".join(str(part) for part in path_parts)
        name = variable.name[:-2] if variable.name.endswith(":0") else variable.name
        path = name if "/" in name else object_path
        parts = path.split("/")
        records.append(
            VariableRecord(
                path=path,
                leaf=parts[-1],
                layer=parts[-2] if len(parts) > 1 else None,
                layer_class=None,
                shape=tuple(None if d is None else int(d) for d in variable.shape),
                dtype=variable.dtype.name,
                trainable=bool(variable.trainable),
                origin=object_path,
                graph_uses=tuple(sorted(graph_uses.get(id(variable), ()))),
            )
        )
    name = getattr(module, "name", None)
    return Inventory(
        source=source or f"<live tf.Module {name!r}>",
        loader=LoaderName.LIVE_MODULE.value,
        records=tuple(records),
        model_name=name,
    )
