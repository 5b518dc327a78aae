"""A decoder for just the protobuf fields a scan needs.

Why not TensorFlow's generated modules: importing them imports all of TensorFlow
(about 2 s and hundreds of MiB, see shared FACTS), which a metadata scan must avoid.
Why not a vendored ``.proto`` compiled with grpcio-tools: the scan needs a dozen
fields of four messages; a wire-format reader for those is smaller than the
generated code and has no protobuf runtime version to keep in step with.

Every length read from the input is checked against the bytes that remain, so a
truncated or hostile file raises :class:`ProtoDecodeError` instead of reading
past the end or allocating what a header claims.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

VARINT = 0
FIXED64 = 1
LENGTH_DELIMITED = 2
FIXED32 = 5


class ProtoDecodeError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    end = len(data)
    while True:
        if pos >= end:
            raise ProtoDecodeError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtoDecodeError("varint longer than 10 bytes")


def iter_fields(data: object) -> Iterator[tuple[int, int, object]]:
    """Yield ``(field_number, wire_type, value)`` for one message.

    ``value`` is an int for varint/fixed fields and a memoryview for
    length-delimited ones (no copy: a 100 MB graph is sliced, not duplicated).
    ``data`` is typed ``object`` because callers pass a field value straight
    through; anything that is not bytes-like raises :class:`ProtoDecodeError`.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        # A field the schema says is a message arrived as a number (wrong wire type).
        raise ProtoDecodeError(f"expected a message, found a {type(data).__name__}")
    view = memoryview(data)
    pos = 0
    end = len(view)
    while pos < end:
        key, pos = read_varint(view, pos)
        field_number, wire_type = key >> 3, key & 7
        if field_number == 0:
            raise ProtoDecodeError("field number 0")
        value: int | memoryview
        if wire_type == VARINT:
            value, pos = read_varint(view, pos)
        elif wire_type == LENGTH_DELIMITED:
            length, pos = read_varint(view, pos)
            if length > end - pos:
                raise ProtoDecodeError(f"field {field_number} claims {length} bytes, {end - pos} remain")
            value = view[pos : pos + length]
            pos += length
        elif wire_type == FIXED64:
            if pos + 8 > end:
                raise ProtoDecodeError("truncated fixed64")
            value = int.from_bytes(view[pos : pos + 8], "little")
            pos += 8
        elif wire_type == FIXED32:
            if pos + 4 > end:
                raise ProtoDecodeError("truncated fixed32")
            value = int.from_bytes(view[pos : pos + 4], "little")
            pos += 4
        else:
            raise ProtoDecodeError(f"unsupported wire type {wire_type}")
        yield field_number, wire_type, value


def as_text(value: object) -> str:
    if not isinstance(value, memoryview):
        raise ProtoDecodeError("expected a string field")
    return bytes(value).decode("utf-8", errors="replace")


def as_int(value: object) -> int:
    """A varint or fixed field: a hostile file may send a length-delimited one in its place."""
    if not isinstance(value, int):
        raise ProtoDecodeError("expected a number field")
    return value


def as_signed64(value: object) -> int:
    """Varints encode negative int64 values as two's complement in 64 bits."""
    value = as_int(value)
    return value - (1 << 64) if value >= 1 << 63 else value


def iter_packed_varints(value: object) -> Iterator[int]:
    if isinstance(value, int):  # an unpacked repeated field yields one element per occurrence
        yield value
        return
    view = cast("bytes | memoryview", value)  # a length-delimited field: iter_fields yields a memoryview
    pos = 0
    while pos < len(view):
        item, pos = read_varint(view, pos)
        yield item
