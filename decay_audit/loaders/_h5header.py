"""A dataset's shape and dtype read straight from its HDF5 object header.

Opening a dataset through libhdf5 (``h5d.open`` + dataspace + datatype) is ~30 µs a
dataset; a file with 6,000 variables spent 0.17 s there, a quarter of its scan. The two
messages the scan needs, dataspace and datatype, are a few bytes at the address
``h5o.visit`` already reports, in a layout the HDF5 specification fixes (object header
versions 1 and 2, "Disk Format: Level 2A"). This module reads only those; anything it
does not recognise (shared messages, other dtype classes, unusual superblock sizes,
a header that fails a bound) returns None and the caller asks libhdf5, so the fast path
can be incomplete but never different. Every loop is bounded by the bytes it was given.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import cast

Reader = Callable[[int, int], bytes]
"""read(offset, size): up to ``size`` bytes of the file at ``offset`` (fewer at its end)."""

SIGNATURE = b"\x89HDF\r\n\x1a\n"
_DATASPACE, _DATATYPE, _CONTINUATION = 0x0001, 0x0003, 0x0010
_MAX_CONTINUATIONS = 4096
"""Attributes added one by one leave a continuation block each (40 attributes: 60 blocks)."""
_MAX_HEADER_BYTES = 1 << 20
_READ_BUDGET = 256 << 20
"""All a reader reads: a 6,000-variable file needs ~8 MB."""
_HEAP_SLACK = 1 << 16
_HEADER_PREFIX_READ = 512
"""Bytes read at first: a Keras dataset's whole header (v1, no attributes) is ~270 bytes."""

_FLOAT_LAYOUT = {
    # size: (precision, exponent location, exponent size, mantissa location, mantissa size, bias)
    2: (16, 10, 5, 0, 10, 15),
    4: (32, 23, 8, 0, 23, 127),
    8: (64, 52, 11, 0, 52, 1023),
}


def header_reader(read: Reader) -> HeaderReader | None:
    """A reader for a file whose superblock this module understands (8-byte offsets and lengths)."""
    head = read(0, 16)
    if len(head) < 16 or head[:8] != SIGNATURE:
        return None
    version = head[8]
    if version in (0, 1):
        offsets, lengths = head[13], head[14]
    elif version in (2, 3):
        offsets, lengths = head[9], head[10]
    else:
        return None
    if offsets != 8 or lengths != 8:
        return None
    return HeaderReader(read)


class _OutOfBudget(ValueError):
    """The reader's byte budget is spent: it answers None from now on."""


class CorruptHeap(Exception):
    """A string attribute points into a global heap that is not one, or at an object it does not hold.
    Raised rather than answered "cannot tell": libhdf5, asked instead, looped on such files (fuzzing)."""


class DeclaredTooLong(Exception):
    """A string attribute declares more bytes than the caller allows; nothing was read."""

    def __init__(self, length: int):
        super().__init__(f"a string declared {length} bytes long")
        self.length = length


class HeaderReader:
    """Reads object headers and global heaps through ``read``. Each header and heap is bounded,
    and so is all it reads together (``_READ_BUDGET``): a file can point thousands of objects at
    headers and heaps that claim a megabyte each. Past the budget it answers None (libhdf5)."""

    def __init__(self, read: Reader):
        self._raw_read = read
        self._heaps: dict[int, dict[int, bytes] | None] = {}
        self._budget = _READ_BUDGET

    def _read(self, offset: int, size: int) -> bytes:
        self._budget -= size
        if self._budget < 0:
            raise _OutOfBudget
        return self._raw_read(offset, size)

    def dataset_layout(self, address: int) -> tuple[tuple[int, ...], str] | None:
        """``(shape, numpy dtype name)`` of the dataset whose object header is at ``address``, or None."""
        try:
            messages = self._messages(address, _LAYOUT, stop=lambda found: len(found) == 2)
        except (struct.error, IndexError, ValueError):
            return None
        if messages is None or len(messages) != 2 or _SHARED in messages[_DATASPACE] + messages[_DATATYPE]:
            return None
        shape = _shape(messages[_DATASPACE][0])
        dtype = _dtype(messages[_DATATYPE][0])
        return None if shape is None or dtype is None else (shape, dtype)

    def string_attribute(
        self, address: int, name: bytes, max_length: int = _MAX_HEADER_BYTES
    ) -> tuple[bool, str | None]:
        """``(True, text)`` for the scalar string attribute ``name`` of the object at ``address``,
        ``(True, None)`` when the object has no such attribute or it is not a scalar string,
        ``(False, None)`` when this reader cannot tell (dense attribute storage, shared parts).
        Raises :class:`DeclaredTooLong` before reading a string declared longer than ``max_length``."""
        known, value = self._attribute(address, name, max_length)
        return known, value if isinstance(value, str) else None

    def string_list_attribute(
        self, address: int, name: bytes, max_length: int = _MAX_HEADER_BYTES
    ) -> tuple[bool, list[str] | None]:
        """The same for a 1-D array of strings (legacy ``layer_names``, ``weight_names``)."""
        known, value = self._attribute(address, name, max_length)
        return known, list(value) if isinstance(value, tuple) else None

    def _attribute(self, address: int, name: bytes, max_length: int) -> tuple[bool, object]:
        try:
            messages = self._messages(address, _ATTRIBUTES, stop=lambda found: False)
            if messages is None or any(info is _SHARED or _dense(info) for info in messages.get(_ATTRIBUTE_INFO, ())):
                return False, None  # attributes in a fractal heap: libhdf5 reads those
            bodies = messages.get(_ATTRIBUTE, [])
            for body in bodies:
                # Names are unique per object: the attribute found in the header is the answer,
                # whatever a shared (or corrupt) message beside it holds.
                answer = _OTHER_NAME if body is _SHARED else self._attribute_value(body, name, max_length)
                if answer is not _OTHER_NAME:
                    return cast("tuple[bool, object]", answer)  # _attribute_value's (known, value)
            return (_SHARED not in bodies), None
        except (struct.error, IndexError, ValueError):
            return False, None

    def _attribute_value(self, body: bytes, wanted: bytes, max_length: int) -> object:
        """``(known, value)``: a str for a scalar string, a tuple of str for a 1-D string array,
        None for any other attribute of that name; ``_OTHER_NAME`` when the name differs."""
        version, flags, name_size, type_size, space_size = struct.unpack_from("<BBHHH", body, 0)
        if version == 1:
            position, pad = 8, 8
        elif version in (2, 3):
            position, pad = 8 + (version == 3), 1
            if flags & 0x03:  # shared datatype or dataspace
                return False, None
        else:
            return False, None
        name = body[position : position + name_size].rstrip(b"\0")
        if name != wanted:
            return _OTHER_NAME
        position += _padded(name_size, pad)
        datatype = body[position : position + type_size]
        position += _padded(type_size, pad)
        shape = _shape(body[position : position + space_size])
        position += _padded(space_size, pad)
        if shape is None or len(shape) > 1:
            return True, None
        count = shape[0] if shape else 1
        data = body[position:]
        kind, bits, size = datatype[0] & 0x0F, datatype[1], struct.unpack_from("<I", datatype, 4)[0]
        if kind == 3:  # fixed-length strings, stored in the message
            if size > max_length:
                raise DeclaredTooLong(size)
            if len(data) < count * size:
                return False, None
            texts = tuple(
                data[i * size : (i + 1) * size].rstrip(b"\0").decode("utf-8", "replace") for i in range(count)
            )
        elif kind == 9 and bits & 0x0F == 1:  # variable-length strings: global heap ids
            if len(data) < count * 16:
                return False, None
            heap_texts: list[str] = []
            for i in range(count):
                length, collection, index = struct.unpack_from("<IQI", data, 16 * i)
                if length > max_length:
                    raise DeclaredTooLong(length)
                if length == 0:  # an empty string may have no heap object at all
                    heap_texts.append("")
                    continue
                objects = self._heap(collection, max_length)
                if objects is None:
                    return False, None
                if index not in objects:
                    raise CorruptHeap(f"global heap at {collection} holds no object {index}")
                heap_texts.append(objects[index][:length].decode("utf-8", "replace"))
            texts = tuple(heap_texts)
        else:
            return True, None
        return True, (texts if shape else texts[0])

    def _heap(self, address: int, max_length: int) -> dict[int, bytes] | None:
        """A global heap collection's objects by index, parsed once (Keras' names share a few)."""
        if address not in self._heaps:
            self._heaps[address] = self._parse_heap(address, max_length)
        return self._heaps[address]

    def _parse_heap(self, address: int, max_length: int) -> dict[int, bytes] | None:
        head = self._read(address, 16)
        if len(head) < 16 or head[:4] != b"GCOL" or head[4] != 1:
            raise CorruptHeap(f"no global heap at {address}")
        size = struct.unpack_from("<Q", head, 8)[0]
        if size > max(_MAX_HEADER_BYTES, max_length + _HEAP_SLACK) or size < 16:
            return None
        data = self._read(address, size)
        objects: dict[int, bytes] = {}
        position = 16
        while position + 16 <= len(data):
            index, _, length = struct.unpack_from("<HH4xQ", data, position)
            if index == 0:  # free space: the end
                break
            objects[index] = data[position + 16 : position + 16 + length]
            position += 16 + _padded(length, 8)
        return objects

    def _messages(
        self, address: int, wanted: frozenset[int], stop: Callable[[dict[int, list[bytes]]], bool]
    ) -> dict[int, list[bytes]] | None:
        """The header's messages of the ``wanted`` types (None: not understood)."""
        block = self._read(address, _HEADER_PREFIX_READ)
        if block[:4] == b"OHDR":
            if len(block) < 8 or block[4] != 2:
                return None
            flags = block[5]
            position = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
            width = 1 << (flags & 0x03)
            size = int.from_bytes(block[position : position + width], "little")
            position += width
            prefix = _V2_PREFIX + (2 if flags & 0x04 else 0)
            return self._collect(address, block, position, size, prefix, b"OCHK", wanted, stop)
        if len(block) < 16 or block[0] != 1:
            return None
        size = struct.unpack_from("<I", block, 8)[0]
        return self._collect(address, block, 16, size, _V1_PREFIX, b"", wanted, stop)

    def _collect(
        self,
        address: int,
        block: bytes,
        position: int,
        size: int,
        prefix: int,
        signature: bytes,
        wanted: frozenset[int],
        stop: Callable[[dict[int, list[bytes]]], bool],
    ) -> dict[int, list[bytes]] | None:
        """Messages of the first chunk and its continuation blocks, in order, within a byte budget.
        Version 2 blocks carry a signature (``OCHK``) and a checksum; version 1 blocks neither."""
        if size > _MAX_HEADER_BYTES:
            return None
        if position + size > len(block):
            block = self._read(address, position + size)
        budget = _MAX_HEADER_BYTES - size
        found: dict[int, list[bytes]] = {}
        chunks = [(block, position, position + size)]
        for index in range(_MAX_CONTINUATIONS + 1):
            if index == len(chunks):
                return found
            data, position, end = chunks[index]
            if end > len(data):
                return None
            while position + prefix <= end:
                kind, length, flags = struct.unpack_from("<BHB" if signature else "<HHB", data, position)
                body = data[position + prefix : position + prefix + length]
                if len(body) != length:
                    return None
                position += prefix + length
                if kind in wanted:
                    found.setdefault(kind, []).append(_SHARED if flags & 0x02 else body)  # shared: stored elsewhere
                    if stop(found):
                        return found
                elif kind == _CONTINUATION:
                    offset, span = struct.unpack_from("<QQ", body, 0)
                    budget -= span
                    if budget < 0 or span < len(signature) + 4 * bool(signature):
                        return None
                    chunk = self._read(offset, span)
                    if chunk[: len(signature)] != signature:
                        return None
                    # a v2 block ends in a 4-byte checksum
                    chunks.append((chunk, len(signature), span - (4 if signature else 0)))
        return None


def _dense(info: bytes) -> bool:
    """Whether an attribute info message points at dense storage (a defined fractal heap address)."""
    if info[0] != 0:
        return True
    position = 2 + (2 if info[1] & 0x01 else 0)
    return info[position : position + 8] != b"\xff" * 8


def _padded(size: int, alignment: int) -> int:
    return -(-size // alignment) * alignment


_OTHER_NAME = object()
_SHARED: bytes = object()  # type: ignore[assignment]
"""Stands for a message stored elsewhere (a shared message): its content is not in this header."""
_ATTRIBUTE, _ATTRIBUTE_INFO = 0x000C, 0x0015
_LAYOUT = frozenset({_DATASPACE, _DATATYPE})
_ATTRIBUTES = frozenset({_ATTRIBUTE, _ATTRIBUTE_INFO})
_V1_PREFIX = 8
"""type (2), size (2), flags (1), reserved (3); the v1 message data is 8-byte aligned."""
_V2_PREFIX = 4
"""type (1), size (2), flags (1), then 2 bytes of creation order when the header tracks it."""


def _shape(message: bytes) -> tuple[int, ...] | None:
    version, rank, flags = message[0], message[1], message[2]
    if version == 1:
        start = 8
    elif version == 2:
        if message[3] != (0 if rank == 0 else 1):  # 2: null dataspace
            return None
        start = 4
    else:
        return None
    if flags & 0x02 and version == 1:  # permutation indices: never written by libhdf5
        return None
    end = start + 8 * rank
    if rank > _MAX_RANK or end > len(message):
        return None
    shape = struct.unpack_from(f"<{rank}Q", message, start)
    return None if any(d >= _UNLIMITED for d in shape) else shape


_MAX_RANK = 32
"""H5S_MAX_RANK: libhdf5 refuses more, so the fast path leaves such a header to it."""
_UNLIMITED = 1 << 63
"""A current size this large is H5S_UNLIMITED or garbage: libhdf5 decides."""


def _dtype(message: bytes) -> str | None:
    """Little-endian IEEE floats and integers only: what numpy names without a byte-order mark."""
    if len(message) < 8:
        return None
    kind = message[0] & 0x0F
    bits = message[1]
    size = struct.unpack_from("<I", message, 4)[0]
    if bits & 0x01:  # big-endian
        return None
    if kind == 0 and size in (1, 2, 4, 8) and len(message) >= 12:
        offset, precision = struct.unpack_from("<HH", message, 8)
        if offset != 0 or precision != 8 * size:
            return None
        return f"{'int' if bits & 0x08 else 'uint'}{8 * size}"
    if kind == 1 and size in _FLOAT_LAYOUT and len(message) >= 20 and not bits & 0x40:
        offset, precision = struct.unpack_from("<HH", message, 8)
        layout = (precision, *message[12:16], struct.unpack_from("<I", message, 16)[0])
        if offset != 0 or layout != _FLOAT_LAYOUT[size]:
            return None
        return f"float{8 * size}"
    return None
