"""The fast paths a 6,000-variable scan takes give what the slow paths they replace give.

Each fast path (the h5 index listed from links, the JSON variables list encoded in one call, the
policy's decisions made once per distinct variable) is checked here against the general code on
inputs built to hit its edges: empty groups, soft links, a second hard link to the same object,
strings holding the text that separates records, a policy with overrides.
"""

from __future__ import annotations

import io
import json

import h5py
import numpy as np
import pytest

from decay_audit.classify import classify
from decay_audit.inventory import VariableRecord
from decay_audit.kinds import Preset
from decay_audit.loaders._h5 import headers_of, open_h5
from decay_audit.loaders._h5index import _listed_by_links, _listed_by_objects, snapshot
from decay_audit.loaders.interface import Limits
from decay_audit.policy import _preset_decisions, apply_policy, build_policy
from decay_audit.report.json_format import _dump


def _tricky_h5(libver: str) -> bytes:
    """Keras-like groups plus what a Keras file never holds: an empty group, a soft link, a second
    hard link to a dataset and to a group, a named datatype."""
    buffer = io.BytesIO()
    with h5py.File(buffer, "w", libver=libver) as f:
        for i in range(3):
            group = f.create_group(f"layers/dense_{i}/vars")
            group.attrs["name"] = f"dense_{i}"
            group.create_dataset("0", data=np.zeros((4, 2), "float32"))
            group.create_dataset("1", data=np.zeros((2,), "float16"))
        f.create_group("layers/concatenate/vars")  # empty: a leaf that is a group
        f["layers/alias"] = f["layers/dense_1/vars/0"]  # a second hard link to a dataset
        f["again"] = f["layers/dense_2"]  # and to a group
        f["soft"] = h5py.SoftLink("/layers/dense_0")
        f["named_type"] = np.dtype("int32")
        f.create_dataset("scalar", data=3.0)
    return buffer.getvalue()


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_listing_by_links_equals_listing_by_objects(libver):
    with open_h5(_tricky_h5(libver), "tricky.h5") as h5:
        by_objects = _listed_by_objects(h5py, h5, "tricky.h5", Limits())
        by_links = _listed_by_links(h5py, h5, headers_of(h5), "tricky.h5", Limits())
        assert by_links is not None
        assert [row[:3] for row in by_links] == [row[:3] for row in by_objects]
        types = {name: kind for name, kind, _, _ in by_links}
        assert types[b"layers/concatenate/vars"] == h5py.h5o.TYPE_GROUP
        assert types[b"named_type"] == h5py.h5o.TYPE_NAMED_DATATYPE
        assert types[b"layers/dense_0/vars/1"] == h5py.h5o.TYPE_DATASET
        # Hard links only, each object once, under the first path in name order (``again`` before
        # ``layers/dense_2``, ``layers/alias`` before ``layers/dense_1/vars/0``), as libhdf5 lists objects.
        assert b"soft" not in types
        assert b"again/vars/0" in types and b"layers/dense_2" not in types
        assert b"layers/alias" in types and b"layers/dense_1/vars/0" not in types
        root = snapshot(h5, "tricky.h5", Limits())
        assert root["layers"]["dense_0"]["vars"]["1"].shape == (2,)
        assert root["layers"]["dense_0"]["vars"]["1"].dtype == "float16"
        assert root["layers"]["dense_0"]["vars"].name_attr == "dense_0"


def test_listing_by_links_keeps_the_object_limit():
    from decay_audit.errors import LimitExceededError

    with open_h5(_tricky_h5("earliest"), "tricky.h5") as h5, pytest.raises(LimitExceededError, match="objects 6"):
        snapshot(h5, "tricky.h5", Limits(max_objects=5))


def _per_record(value: list, indent: int) -> str:
    """The JSON list as one ``json.dumps`` per record wrote it before."""
    inner = " " * (indent + 2)
    return "[\n" + ",\n".join(inner + json.dumps(item) for item in value) + "\n" + " " * indent + "]"


@pytest.mark.parametrize(
    "records",
    [
        [{"a": 1, "b": "x"}, {"a": 2, "b": 'text }, {"a": 3 inside a string'}],
        [{"evidence": ['}, {"', "\\", '"'], "n": None}, {"evidence": [], "n": 1.5}],
        [{"only": True}],
        [{"a": 1}, {}, {"b": 2}],  # an empty record: per record, as before
        [{"a": 1}, {"nested": {"b": 2}}],  # not flat: per record, multi-line, as before
    ],
)
def test_variables_list_in_one_encoding_is_the_same_text(records):
    expected = "[\n" + ",\n".join(" " * 4 + _dump(item, 4) for item in records) + "\n" + " " * 2 + "]"
    assert _dump(records, 2) == expected
    if all(records) and all(not isinstance(v, dict) for r in records for v in r.values()):
        assert _dump(records, 2) == _per_record(records, 2)


def _record(path: str, shape: tuple, trainable: bool = True, known: bool = True) -> VariableRecord:
    return VariableRecord(
        path=path,
        leaf=path.rsplit("/", 1)[-1],
        layer=path.split("/")[0],
        layer_class="Dense",
        shape=shape,
        dtype="float32",
        trainable=trainable,
        origin=path,
        layer_builtin=True,
        trainable_known=known,
    )


@pytest.mark.parametrize("preset", list(Preset))
def test_decisions_made_once_per_kind_equal_the_general_loop(preset):
    records = [
        _record("d1/kernel", (4, 2)),
        _record("d1/bias", (2,)),
        _record("d2/kernel", (2, 2), trainable=False),
        _record("d3/kernel", (2, 2), known=False),
        _record("d3/bias", (2,), known=False),
        _record("d4/bias", (2,)),
    ]
    classifications = classify(records)
    general = apply_policy(records, classifications, build_policy(preset, no_decay=["re:^never$"]))
    assert _preset_decisions(records, classifications, Preset(preset)) == general.decisions
