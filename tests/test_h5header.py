"""The object-header fast path answers exactly what libhdf5 answers, or nothing."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decay_audit.loaders._h5header import header_reader

SAMPLES = Path(__file__).resolve().parent.parent / "sample_models"

ANSWERED = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"]
"""dtypes the fast path must read itself: everything else may go to libhdf5."""


def _compare(image: bytes) -> tuple[dict[str, tuple], dict[str, tuple | None]]:
    """Per dataset: libhdf5's (shape, dtype) and the fast path's."""
    reader = header_reader(lambda offset, size: image[offset : offset + size])
    assert reader is not None
    listed = []
    with h5py.File(io.BytesIO(image), "r") as handle:
        h5py.h5o.visit(handle.id, lambda name, info: listed.append((name, info.type, info.addr)), info=True)
        expected, fast = {}, {}
        for name, kind, address in listed:
            if kind == h5py.h5o.TYPE_DATASET:
                dataset = h5py.h5d.open(handle.id, name)
                expected[name.decode()] = (tuple(int(d) for d in dataset.shape), str(dataset.dtype))
                fast[name.decode()] = reader.dataset_layout(address)
    return expected, fast


def _file(libver: str, attributes: int) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=libver) as handle:
        for dtype in ANSWERED + [">f4", ">i8", "bool", "complex64"]:
            handle.create_dataset(f"g/{dtype.replace('>', 'be_')}", data=np.zeros((3, 2), dtype=dtype))
        handle.create_dataset("scalar", data=np.float32(1.0))
        handle.create_dataset("empty", shape=(0, 5), dtype="float32")
        handle.create_dataset("rank5", shape=(1, 2, 3, 4, 5), dtype="float32")
        handle.create_dataset("chunked", shape=(64, 8), dtype="float32", chunks=(8, 8), compression="gzip")
        handle.create_dataset("text", data=np.array([b"ab", b"cd"]))
        handle.create_dataset("strings", data=["a", "bc"], dtype=h5py.string_dtype())
        grown = handle.create_dataset("grown", shape=(7,), dtype="float64")
        for i in range(attributes):  # attributes added later push messages into continuation blocks
            grown.attrs[f"note_{i}"] = "x" * 200
            handle["g/float32"].attrs[f"note_{i}"] = np.arange(40)
    return buffer.getvalue()


@pytest.mark.parametrize("libver", ["earliest", "latest"])
@pytest.mark.parametrize("attributes", [0, 40])
def test_fast_path_agrees_with_libhdf5_on_every_dataset(libver, attributes):
    expected, fast = _compare(_file(libver, attributes))
    for name, answer in fast.items():
        assert answer is None or answer == expected[name], name
    answered = {name for name, answer in fast.items() if answer is not None}
    must = {name for name, (shape, dtype) in expected.items() if dtype in ANSWERED}
    assert must <= answered, sorted(must - answered)
    assert "g/be_f4" not in answered and "g/bool" not in answered  # big-endian, enum: libhdf5 answers


@pytest.mark.parametrize("name", ["seed.keras", "zoo.keras", "subclassed.keras", "seed.h5", "tf_keras.h5"])
def test_fast_path_reads_every_variable_of_the_samples(name):
    path = SAMPLES / name
    image = zipfile.ZipFile(path).read("model.weights.h5") if name.endswith(".keras") else path.read_bytes()
    expected, fast = _compare(image)
    assert fast == expected


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=0, max_size=600), st.integers(0, 700))
def test_fast_path_on_garbage_answers_none_or_a_layout_never_raises(garbage, address):
    image = bytearray((SAMPLES / "seed.weights.h5").read_bytes())
    image[address : address + len(garbage)] = garbage
    image = bytes(image)
    reader = header_reader(lambda offset, size: image[offset : offset + size])
    if reader is not None:
        for probe in (address, 800, 1400, 2**40):
            answer = reader.dataset_layout(probe)
            assert answer is None or (isinstance(answer[0], tuple) and isinstance(answer[1], str))


def test_a_continuation_that_points_at_itself_ends_within_the_bounds():
    """A header whose continuation block is its own message list: read at most a bounded number of times."""
    import struct

    image = bytearray((SAMPLES / "seed.weights.h5").read_bytes()[:16].ljust(256, b"\0"))
    message = struct.pack("<HHB3xQQ", 0x0010, 16, 0, 116, 24)
    image[100:140] = struct.pack("<BBHII4x", 1, 0, 1, 1, 24) + message
    reads = []

    def read(offset, size):
        reads.append(size)
        return bytes(image[offset : offset + size])

    assert header_reader(read).dataset_layout(100) is None
    assert 3 < len(reads) <= 4100  # superblock, first block, at most ~4,096 continuation blocks


def _attribute_file(libver: str) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=libver) as handle:
        handle.create_group("plain").attrs["name"] = "dense_1"
        handle.create_group("empty").attrs["name"] = ""
        handle.create_group("legacy").attrs["weight_names"] = np.array([b"dense/kernel:0", b"dense/bias:0"])
        handle.create_group("legacy_vlen").attrs["weight_names"] = ["a/kernel:0", "", "caf\u00e9/b:0"]
        handle.create_group("legacy_empty").attrs["weight_names"] = np.array([], dtype="S1")
        handle.create_group("unicode").attrs["name"] = "caf\u00e9_\u4e2d"
        handle.create_group("fixed").attrs["name"] = np.bytes_(b"conv")
        handle.create_group("number").attrs["name"] = 3
        handle.create_group("array").attrs["name"] = ["a", "b"]
        handle.create_group("absent").attrs["other"] = "x"
        handle.create_group("nothing")
        crowded = handle.create_group("crowded")  # past 8 attributes libver=latest goes dense
        for i in range(12):
            crowded.attrs[f"a{i}"] = "y" * 100
        crowded.attrs["name"] = "after_many"
        for i in range(300):  # many strings: several global heap collections
            handle.create_group(f"many/{i}").attrs["name"] = f"layer_{i}_" + "z" * (i % 50)
    return buffer.getvalue()


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_name_attribute_agrees_with_libhdf5_or_defers(libver):
    image = _attribute_file(libver)
    reader = header_reader(lambda offset, size: image[offset : offset + size])
    listed, answered = [], 0
    with h5py.File(io.BytesIO(image), "r") as handle:
        h5py.h5o.visit(handle.id, lambda name, info: listed.append((name.decode(), info.type, info.addr)), info=True)
        for name, kind, address in listed:
            if kind != h5py.h5o.TYPE_GROUP:
                continue
            known, text = reader.string_attribute(address, b"name")
            value = handle[name].attrs.get("name")
            expected = value if isinstance(value, str) else value.decode() if isinstance(value, bytes) else None
            if known:
                answered += 1
                assert text == expected, name
            known, texts = reader.string_list_attribute(address, b"weight_names")
            value = handle[name].attrs.get("weight_names")
            if value is not None:
                assert known and texts == [v.decode() if isinstance(v, bytes) else v for v in value], name
            else:
                assert texts is None
    assert answered >= 300  # the fast path did the work, not only the fallback


def _legacy_h5(tmp_path, config: str, libver: str = "earliest", userblock: int = 0) -> Path:
    path = tmp_path / f"legacy_{libver}_{userblock}.h5"
    with h5py.File(path, "w", libver=libver, userblock_size=userblock) as handle:
        handle.attrs["model_config"] = config
        handle.attrs["keras_version"] = "3.15.1"
        handle.create_group("model_weights").attrs["layer_names"] = np.array([], dtype="S1")
    return path


@pytest.mark.parametrize("libver,userblock", [("earliest", 0), ("latest", 0), ("earliest", 512)])
def test_root_config_through_the_header_reader_equals_libhdf5(tmp_path, libver, userblock):
    from decay_audit.loaders._h5 import headers_of, open_h5, root_text

    config = '{"class_name": "Sequential", "config": {"name": "caf\u00e9", "layers": []}}'
    path = _legacy_h5(tmp_path, config, libver, userblock)
    with open(path, "rb") as raw, open_h5(raw, str(path)) as h5:
        headers = headers_of(h5)
        assert headers is not None
        assert headers.string_attribute(h5py.h5o.get_info(h5.id).addr, b"model_config")[0]  # not libhdf5
        assert root_text(h5, "model_config", 1 << 20) == config == h5.attrs["model_config"]


def test_a_model_config_declared_longer_than_the_limit_is_refused_before_it_is_read(tmp_path):
    """The vlen string's length field says 2 GiB: one line naming the limit, no 2 GiB read."""
    import struct

    from decay_audit.errors import LimitExceededError
    from decay_audit.loaders.h5_file import load_h5
    from decay_audit.loaders.interface import Limits

    config = '{"class_name": "Sequential", "config": {"name": "m", "layers": []}}'
    path = _legacy_h5(tmp_path, config)
    image = bytearray(path.read_bytes())
    collection = image.index(b"GCOL")
    heap_id = struct.pack("<IQ", len(config), collection)
    at = image.index(heap_id)
    image[at : at + 4] = struct.pack("<I", 2**31)
    path.write_bytes(bytes(image))
    with pytest.raises(LimitExceededError, match="config-bytes"):
        load_h5(path, Limits(read_seconds=0))


def test_a_shared_sibling_message_does_not_hide_the_attribute_found_beside_it():
    """Attribute names are unique per object: a message flagged shared (stored elsewhere, or
    corrupt) next to the wanted attribute cannot change it; without the wanted one, defer."""
    import struct

    def attribute(name: bytes, flags: int = 0) -> bytes:
        padded = name + b"\0" * (8 - len(name) % 8)
        datatype = struct.pack("<BBBBI", 0x13, 0, 0, 0, 4)  # fixed-length string of 4 bytes
        space = struct.pack("<BBBB4x", 1, 0, 0, 0)  # scalar
        body = struct.pack("<BBHHH", 1, 0, len(name) + 1, len(datatype), len(space)) + padded + datatype + space
        body += b"abcd"
        body += b"\0" * (-len(body) % 8)
        return struct.pack("<HHB3x", 0x000C, len(body), flags) + body

    def image_with(*messages: bytes) -> bytes:
        image = bytearray((SAMPLES / "seed.weights.h5").read_bytes()[:16].ljust(100, b"\0"))
        payload = b"".join(messages)
        image += struct.pack("<BBHII4x", 1, 0, len(messages), 1, len(payload)) + payload
        return bytes(image)

    found = image_with(attribute(b"other", flags=0x02), attribute(b"name"))
    reader = header_reader(lambda offset, size: found[offset : offset + size])
    assert reader.string_attribute(100, b"name") == (True, "abcd")
    missing = image_with(attribute(b"other", flags=0x02))
    reader = header_reader(lambda offset, size: missing[offset : offset + size])
    assert reader.string_attribute(100, b"name") == (False, None)
