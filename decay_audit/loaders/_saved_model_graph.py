"""How a SavedModel's saved functions use each variable, read from its GraphDef function library.

When no layer class is recorded, the ops that consume a variable (MatMul, Conv2D, BiasAdd,
FusedBatchNorm, gathers) are the best evidence of its role; and the name scopes of the reads
recover the layer paths Keras 3 exports lose. Captured variables are followed through the
function calls that pass them on, within a step budget linear in the graph's edges.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from decay_audit.loaders._protowire import as_text, iter_fields
from decay_audit.loaders.interface import Limits

_PASS_THROUGH = frozenset({"Identity", "Cast", "IdentityN", "ReadVariableOp", "Reshape", "ExpandDims"})
_CALL_OPS = frozenset({"StatefulPartitionedCall", "PartitionedCall"})


def graph_uses(
    graph_def: Any, concrete: Mapping[str, list[int]], variable_ids: set[int], limits: Limits, subject: str
) -> tuple[dict[int, tuple[str, ...]], dict[int, set[str]], int]:
    """Variable node id → sorted ``Op:input_position`` uses across the saved functions,
    variable node id → names of the ``ReadVariableOp`` nodes that read it (their name scopes are
    the layer scopes of the call, see ``saved_model._unique_paths``), and how many held arguments the
    step budget left unfollowed (0 when the walk finished)."""
    functions = _functions(graph_def, limits, subject)
    holds: dict[tuple[str, str], int] = {}  # (function, arg name) → variable id
    for fn_name, bound in concrete.items():
        fn = functions.get(fn_name)
        if fn is None or not bound:
            continue
        args = fn["args"]
        captured = args[len(args) - len(bound) :] if len(bound) <= len(args) else []
        for arg, node_id in zip(captured, bound):
            if node_id in variable_ids:
                holds[(fn_name, arg)] = node_id
    # Each (function, argument) is followed once: re-walking a function whenever it gained a
    # held argument would be quadratic in the variables one function captures. The step
    # budget keeps a hostile fan-out (many arguments into one hub node) linear in the graph.
    queue: deque[tuple[str, str]] = deque(holds)
    budget = (
        16 * sum(len(edges) for fn in functions.values() for edges in fn["consumers"].values())
        + 4 * len(holds)
        + 10_000
    )
    uses: dict[int, set[str]] = {}
    reads: dict[int, set[str]] = {}
    while queue and budget > 0:
        fn_name, arg = queue.popleft()
        var = holds[(fn_name, arg)]
        consumers = functions[fn_name]["consumers"]
        frontier = [arg]
        depth = 0
        while frontier and depth < 4 and budget > 0:
            next_frontier = []
            for producer in frontier:
                for op, position, node_name, callee in consumers.get(producer, ()):
                    budget -= 1
                    if op in _CALL_OPS and callee:
                        callee_fn = functions.get(callee)
                        if callee_fn and position < len(callee_fn["args"]):
                            key = (callee, callee_fn["args"][position])
                            if key not in holds:
                                holds[key] = var
                                queue.append(key)
                    elif op in _PASS_THROUGH:
                        if op == "ReadVariableOp" and depth == 0:
                            reads.setdefault(var, set()).add(node_name)
                        next_frontier.append(node_name)
                    else:
                        uses.setdefault(var, set()).add(f"{op}:{position}")
            frontier = next_frontier
            depth += 1
    unfinished = len(queue) + int(budget <= 0)  # the walk the budget ended, and those never started
    return {var: tuple(sorted(found)) for var, found in uses.items()}, reads, unfinished


def _functions(graph_def: Any, limits: Limits, subject: str) -> dict[str, dict[str, Any]]:
    """FunctionDefs: name → {args, consumers: producer → [(op, input position, node, callee)]}."""
    functions: dict[str, dict[str, Any]] = {}
    count = 0
    for number, _, value in iter_fields(graph_def):
        if number != 2:  # GraphDef.library
            continue
        for lib_number, _, fn_value in iter_fields(value):
            if lib_number != 1:  # FunctionDefLibrary.function
                continue
            name = ""
            args: list[str] = []
            consumers: dict[str, list[tuple[str, int, str, str | None]]] = {}
            for fn_number, _, fn_field in iter_fields(fn_value):
                if fn_number == 1:  # signature: OpDef{name=1, input_arg=2}
                    for sig_number, _, sig_value in iter_fields(fn_field):
                        if sig_number == 1:
                            name = as_text(sig_value)
                        elif sig_number == 2:
                            for arg_number, _, arg_value in iter_fields(sig_value):
                                if arg_number == 1:
                                    args.append(as_text(arg_value))
                                    break
                elif fn_number == 3:  # node_def
                    _index_node(fn_field, consumers)
            functions[name] = {"args": args, "consumers": consumers}
            count += 1  # not len(functions): a file may repeat one name without end
            limits.check("max_functions", count, subject)
    return functions


def _index_node(data: Any, consumers: dict[str, list[tuple[str, int, str, str | None]]]) -> None:
    node_name, op, inputs, callee = "", "", [], None
    for number, _, value in iter_fields(data):
        if number == 1:
            node_name = as_text(value)
        elif number == 2:
            op = as_text(value)
        elif number == 3:
            inputs.append(as_text(value))
        elif number == 5:  # attr map entry {key=1, value=2: AttrValue}
            key, attr_value = "", None
            for entry_number, _, entry_value in iter_fields(value):
                if entry_number == 1:
                    key = as_text(entry_value)
                elif entry_number == 2:
                    attr_value = entry_value
            if key == "f" and attr_value is not None:
                for attr_number, _, func in iter_fields(attr_value):
                    if attr_number == 10:  # AttrValue.func: NameAttrList{name=1}
                        for func_number, _, func_value in iter_fields(func):
                            if func_number == 1:
                                callee = as_text(func_value)
    position = 0
    for text in inputs:
        if text.startswith("^"):
            continue
        producer = text.split(":", 1)[0]
        consumers.setdefault(producer, []).append((op, position, node_name, callee))
        position += 1
