"""Builders and hypothesis strategies for structurally valid but hostile model files.

Byte mutation rarely gets past a parser's first length check; these build well-formed
protobuf SavedModels (object graphs with cycles, ids out of range, deep chains, huge
declared lengths, functions calling each other) and zip archives (overlapping members,
sizes that lie, thousands of members) from the field numbers decay-audit's readers use
(tensorflow/core/protobuf/saved_object_graph.proto, meta_graph.proto, function.proto,
node_def.proto; the zip APPNOTE 6.3.9 central directory).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

from hypothesis import strategies as st

# -- protobuf wire format ----------------------------------------------------------------------


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    return varint((number << 3) | wire)


def f_varint(number: int, value: int) -> bytes:
    return key(number, 0) + varint(value)


def f_bytes(number: int, payload: bytes | str) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode()
    return key(number, 2) + varint(len(payload)) + payload


def f_lying(number: int, payload: bytes, claimed: int) -> bytes:
    """A length-delimited field that claims ``claimed`` bytes but carries ``payload``."""
    return key(number, 2) + varint(claimed) + payload


# -- SavedModel ----------------------------------------------------------------------------------


@dataclass
class Node:
    """One SavedObject: children (node id, local name), and what kind of object it is."""

    children: list[tuple[int, str]] = field(default_factory=list)
    kind: str = "user"  # user | variable | function
    identifier: str = "_generic_user_object"
    name: str = ""
    shape: tuple[int, ...] = (2, 2)
    trainable: bool = True
    dtype: int = 1


@dataclass
class Function:
    """One FunctionDef: arguments, and nodes as (name, op, inputs, callee)."""

    name: str
    args: list[str]
    nodes: list[tuple[str, str, list[str], str | None]] = field(default_factory=list)


def saved_object(node: Node) -> bytes:
    out = b"".join(f_bytes(1, f_varint(1, child) + f_bytes(2, name)) for child, name in node.children)
    if node.kind == "variable":
        shape = b"".join(f_bytes(2, f_varint(1, d)) for d in node.shape)
        out += f_bytes(
            7, f_varint(1, node.dtype) + f_bytes(2, shape) + f_varint(3, int(node.trainable)) + f_bytes(6, node.name)
        )
    elif node.kind == "function":
        out += f_bytes(6, b"")
    else:
        out += f_bytes(4, f_bytes(1, node.identifier))
    return out


def function_def(function: Function) -> bytes:
    signature = f_bytes(1, function.name) + b"".join(f_bytes(2, f_bytes(1, arg)) for arg in function.args)
    body = f_bytes(1, signature)
    for name, op, inputs, callee in function.nodes:
        node = f_bytes(1, name) + f_bytes(2, op) + b"".join(f_bytes(3, i) for i in inputs)
        if callee is not None:
            node += f_bytes(5, f_bytes(1, "f") + f_bytes(2, f_bytes(10, f_bytes(1, callee))))
        body += f_bytes(3, node)
    return body


def saved_model(
    nodes: list[Node], functions: list[Function] = (), concrete: dict[str, list[int]] | None = None
) -> bytes:
    """saved_model.pb bytes: one MetaGraphDef with an object graph and a function library."""
    graph = b"".join(f_bytes(1, saved_object(node)) for node in nodes)
    for name, bound in (concrete or {}).items():
        packed = b"".join(varint(b) for b in bound)
        graph += f_bytes(2, f_bytes(1, name) + f_bytes(2, f_bytes(2, packed)))
    library = b"".join(f_bytes(1, function_def(fn)) for fn in functions)
    graph_def = f_bytes(2, library) if functions else b""
    meta = f_bytes(2, graph_def) + f_bytes(7, graph)
    return f_varint(1, 1) + f_bytes(2, meta)


def keras_metadata(entries: list[tuple[str, str]]) -> bytes:
    """keras_metadata.pb: (node_path, metadata JSON) per layer."""
    return b"".join(f_bytes(1, f_bytes(3, path) + f_bytes(5, meta)) for path, meta in entries)


def wide_saved_model(variables: int) -> tuple[bytes, bytes]:
    """A tf_keras-like SavedModel with ``variables`` dense layers, each a child of the root
    with its kernel, a function per layer capturing it, and keras metadata per layer."""
    nodes = [Node(identifier="_tf_keras_network")]
    functions, concrete, metadata = [], {}, []
    for index in range(variables):
        layer_id = len(nodes)
        nodes[0].children.append((layer_id, f"layer-{index}"))
        nodes.append(Node(identifier="_tf_keras_layer", children=[(layer_id + 1, "kernel")]))
        nodes.append(Node(kind="variable", name=f"dense_{index}/kernel:0"))
        fn = Function(
            f"fn_{index}",
            ["x", "w"],
            [("read", "ReadVariableOp", ["w"], None), ("mm", "MatMul", ["x", "read:value:0"], None)],
        )
        functions.append(fn)
        concrete[fn.name] = [layer_id + 1]
        metadata.append((f"root.layer-{index}", f'{{"class_name": "Dense", "name": "dense_{index}"}}'))
    return saved_model(nodes, functions, concrete), keras_metadata(metadata)


@st.composite
def hostile_object_graphs(draw) -> bytes:
    """SavedModel bytes whose object graph is well-formed protobuf but hostile in structure."""
    count = draw(st.integers(1, 40))
    names = st.sampled_from(
        [
            "layer-0",
            "kernel",
            "bias",
            "variables",
            "trainable_variables",
            "non_trainable_variables",
            "0",
            "1",
            "cell",
            "_all_variables",
            "signatures",
            "",
        ]
    )
    nodes = []
    for index in range(count):
        kind = draw(st.sampled_from(["user", "user", "variable", "function"]))
        children = draw(
            st.lists(
                st.tuples(
                    st.one_of(st.integers(0, count - 1), st.integers(count, 1 << 40), st.just(index), st.just(0)), names
                ),
                max_size=6,
            )
        )
        nodes.append(
            Node(
                children=children,
                kind=kind,
                identifier=draw(
                    st.sampled_from(
                        ["_generic_user_object", "trackable_list_wrapper", "_tf_keras_layer", "_tf_keras_network", ""]
                    )
                ),
                name=draw(st.sampled_from(["", "dense/kernel:0", "w", "a/b/c:0", "x" * 300])),
                shape=tuple(
                    draw(st.lists(st.one_of(st.integers(0, 8), st.just((1 << 64) - 1), st.just(1 << 63)), max_size=4))
                ),
                dtype=draw(st.sampled_from([1, 2, 14, 19, 0, 999, (1 << 64) - 1])),
            )
        )
    if draw(st.booleans()):  # a long chain: deep nesting by reference, not by protobuf nesting
        depth = draw(st.integers(10, 3000))
        base = len(nodes)
        nodes[0].children.append((base, "deep"))
        for level in range(depth):
            nodes.append(Node(children=[(base + level + 1, "next")] if level + 1 < depth else [(0, "cycle")]))
    functions, concrete = [], {}
    for index in range(draw(st.integers(0, 6))):
        args = [f"a{i}" for i in range(draw(st.integers(0, 5)))]
        fn_nodes = []
        for node_index in range(draw(st.integers(0, 8))):
            op = draw(
                st.sampled_from(
                    ["ReadVariableOp", "Identity", "MatMul", "StatefulPartitionedCall", "PartitionedCall", "Conv2D"]
                )
            )
            inputs = (
                draw(
                    st.lists(
                        st.sampled_from(args + [f"n{j}" for j in range(node_index)] + ["^a0", "n0:out:0"]), max_size=4
                    )
                )
                if args or node_index
                else []
            )
            callee = f"fn{draw(st.integers(0, 6))}" if "Call" in op else None
            fn_nodes.append((f"n{node_index}", op, inputs, callee))
        functions.append(Function(f"fn{index}", args, fn_nodes))
        concrete[f"fn{index}"] = draw(st.lists(st.integers(0, count + 2), max_size=5))
    data = saved_model(nodes, functions, concrete)
    if draw(st.booleans()):  # a field that claims far more than it carries, somewhere
        cut = draw(st.integers(0, len(data)))
        data = (
            data[:cut]
            + f_lying(
                draw(st.integers(1, 12)),
                b"x" * draw(st.integers(0, 8)),
                draw(st.sampled_from([1 << 31, 1 << 40, (1 << 63) - 1, 100])),
            )
            + data[cut:]
        )
    return data


# -- zip central directories -----------------------------------------------------------------------

_LOCAL = struct.Struct("<4sHHHHHIIIHH")
_CENTRAL = struct.Struct("<4sHHHHHHIIIHHHHHII")
_END = struct.Struct("<4sHHHHIIH")


@dataclass
class Member:
    """One zip member as the archive will declare it; ``declared_*`` may lie."""

    name: str
    data: bytes
    declared_size: int | None = None
    declared_compressed: int | None = None
    offset: int | None = None  # where the central directory says the local header is
    method: int = 0
    flags: int = 0


def zip_bytes(members: list[Member], comment: bytes = b"", declared_entries: int | None = None) -> bytes:
    """A zip archive whose central directory says what each Member declares, true or not."""
    out = bytearray()
    offsets = []
    for member in members:
        offsets.append(len(out))
        name = member.name.encode("utf-8", "surrogatepass")
        payload = zlib.compress(member.data)[2:-4] if member.method == 8 else member.data
        crc = zlib.crc32(member.data)
        out += (
            _LOCAL.pack(
                b"PK\x03\x04", 20, member.flags, member.method, 0, 0, crc, len(payload), len(member.data), len(name), 0
            )
            + name
            + payload
        )
    directory_start = len(out)
    for member, real_offset in zip(members, offsets):
        name = member.name.encode("utf-8", "surrogatepass")
        payload_size = len(zlib.compress(member.data)[2:-4]) if member.method == 8 else len(member.data)
        out += (
            _CENTRAL.pack(
                b"PK\x01\x02",
                20,
                20,
                member.flags,
                member.method,
                0,
                0,
                zlib.crc32(member.data),
                _u32(member.declared_compressed if member.declared_compressed is not None else payload_size),
                _u32(member.declared_size if member.declared_size is not None else len(member.data)),
                len(name),
                0,
                0,
                0,
                0,
                0,
                _u32(member.offset if member.offset is not None else real_offset),
            )
            + name
        )
    entries = len(members) if declared_entries is None else declared_entries
    out += (
        _END.pack(
            b"PK\x05\x06",
            0,
            0,
            entries & 0xFFFF,
            entries & 0xFFFF,
            len(out) - directory_start,
            directory_start,
            len(comment),
        )
        + comment
    )
    return bytes(out)


def _u32(value: int) -> int:
    return value & 0xFFFFFFFF


@st.composite
def hostile_zips(draw, config: bytes, weights: bytes) -> bytes:
    """A .keras-shaped archive (config.json + model.weights.h5) with a hostile directory."""
    members = [Member("config.json", config), Member("model.weights.h5", weights)]
    for index in range(draw(st.integers(0, 3))):
        members.append(
            Member(
                draw(
                    st.sampled_from(["metadata.json", "model.weights.h5", "config.json", "../x", "a" * 300, "\udcff"])
                ),
                b"junk" * index,
            )
        )
    if draw(st.booleans()):  # many members
        members.extend(Member(f"m{i}", b"") for i in range(draw(st.integers(10, 3000))))
    for member in members[:4]:
        choice = draw(st.sampled_from(["none", "size", "compressed", "offset", "overlap", "deflate", "encrypt"]))
        if choice == "size":
            member.declared_size = draw(st.sampled_from([0, 1, 0xFFFFFFFF, len(member.data) * 2 + 1]))
        elif choice == "compressed":
            member.declared_compressed = draw(st.sampled_from([0, 0xFFFFFFFF, len(member.data) + 100]))
        elif choice == "offset":
            member.offset = draw(st.sampled_from([0, 1, 0xFFFFFFFF, 30]))
        elif choice == "overlap":
            member.offset = 0  # every overlapping member points at the first local header
        elif choice == "deflate":
            member.method = 8
        elif choice == "encrypt":
            member.flags = 1
    declared = draw(st.one_of(st.none(), st.sampled_from([0, 1, 0xFFFF])))
    return zip_bytes(
        members, comment=draw(st.sampled_from([b"", b"PK\x05\x06" + b"\0" * 18])), declared_entries=declared
    )
