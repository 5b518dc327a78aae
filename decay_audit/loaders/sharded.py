"""Sharded checkpoints: a JSON index and the HDF5 shards it names, read as the one model they are.

Two writers make them, with different layouts:

- Keras 3 ``save_weights("x.weights.json", max_shard_size=...)`` and keras_hub's ``save_to_preset``
  (``ShardedH5IOStore``, keras/src/saving/saving_lib.py 3.15): ``x_00000.weights.h5``,
  ``x_00001.weights.h5``, ... each hold a part of the usual weights tree, and the index's
  ``weight_map`` maps each ``/layers/<key>/vars`` group to the shard(s) holding it, in save order.
  A layer's ``vars`` group can start in one shard (with its ``name`` attribute) and carry on in
  the next, so shards are joined group by group, not file by file.
- transformers ``save_pretrained(max_shard_size=...)`` (modeling_tf_utils.py 4.49):
  ``tf_model-00001-of-00003.h5`` ... each list their datasets in a root ``layer_names`` attribute,
  named without the model's own first component; ``tf_model.h5.index.json`` maps full variable
  names to shards.

One shard is never a model: given alone, it is read as part of its checkpoint when the index is
beside it (loaders.start_load), and a Hugging Face shard without it is refused, naming the index.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decay_audit.errors import ModelLoadError
from decay_audit.inventory import Inventory, VariableRecord
from decay_audit.loaders._h5 import open_h5
from decay_audit.loaders._h5index import H5Node, snapshot
from decay_audit.loaders._keras_tree import KerasTreeWalker
from decay_audit.loaders._shard_names import regular_file
from decay_audit.loaders.interface import Limits, LoaderName, parse_json

NO_CONFIG_NOTE = "no model config in the file (weights only): classes inferred from layer names and shapes"


# -- reading --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ShardIndex:
    """A parsed index: its ``weight_map`` in file order, and which writer made it."""

    path: Path
    weight_map: tuple[tuple[str, tuple[str, ...]], ...]
    keras: bool

    @property
    def shards(self) -> tuple[str, ...]:
        """Shard files in the order they were written (their names number them)."""
        return tuple(sorted({name for _, names in self.weight_map for name in names}))


def read_index(path: Path, limits: Limits) -> ShardIndex:
    """Parse and check an index: every shard a plain file name in the index's own directory."""
    subject = str(path)
    data = read_bounded(path, subject, limits)
    index = parse_json(data, subject, limits)
    weight_map = index.get("weight_map") if isinstance(index, Mapping) else None
    if not isinstance(weight_map, Mapping):
        raise ModelLoadError(subject, "not a sharded checkpoint index (no weight_map object)")
    if not weight_map:
        raise ModelLoadError(subject, "sharded checkpoint index lists no weights (empty weight_map)")
    limits.check("max_objects", len(weight_map), subject)
    entries = []
    for key, value in weight_map.items():
        names = tuple(value) if isinstance(value, list) else (value,)
        if not names or not all(isinstance(n, str) for n in names):
            raise ModelLoadError(subject, f"weight_map entry {key!r} does not name a shard file")
        for name in names:
            if name in ("", ".", "..") or "/" in name or "\\" in name or not name.endswith(".h5"):
                raise ModelLoadError(
                    subject, f"weight_map names {name!r}: a shard must be an .h5 file beside the index"
                )
        entries.append((key, names))
    keras = all(key.startswith("/") for key, _ in entries)
    return ShardIndex(path=path, weight_map=tuple(entries), keras=keras)


def read_bounded(path: Path, subject: str, limits: Limits) -> bytes:
    with open_regular(path, subject) as handle:
        size = os.fstat(handle.fileno()).st_size
        limits.check("max_config_bytes", size, subject)
        data = handle.read(size + 1)
    limits.check("max_config_bytes", len(data), subject)
    return data


@contextmanager
def open_regular(path: Path, subject: str) -> Iterator[Any]:
    """Open a file for reading, refusing anything but a regular file without blocking on it
    (O_NONBLOCK, then fstat through the descriptor: a FIFO named as a shard is never waited on)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise ModelLoadError(subject, "missing") from None
    except OSError as exc:
        raise ModelLoadError(subject, f"cannot read ({exc.strerror or exc})") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise ModelLoadError(subject, "is not a regular file")
    with os.fdopen(descriptor, "rb") as handle:
        yield handle


def shard_path(index: ShardIndex, name: str) -> Path:
    shard = index.path.with_name(name)
    if not regular_file(shard):
        raise ModelLoadError(
            str(index.path), f"shard {name} listed in the index is missing (or not a regular file) beside it"
        )
    return shard


# -- Keras ----------------------------------------------------------------------------------------


def join_keras_shards(index: ShardIndex, limits: Limits) -> H5Node:
    """One weights tree from every shard the index lists, as Keras' ShardedH5IOStore reads it.

    A group split over two shards gets the children of both and the first ``name`` attribute
    found; datasets keep their shard in ``path`` (``x_00001.weights.h5:layers/dense/vars/0``) so a
    record's origin names the file it is in."""
    subject = str(index.path)
    limits.check("max_objects", len(index.shards), subject)
    root = H5Node(path="", children={})
    total = 0
    for ordinal, name in enumerate(index.shards):
        shard = shard_path(index, name)
        shard_subject = str(shard)
        with open_regular(shard, shard_subject) as raw, open_h5(raw, shard_subject, small_in_memory=False) as h5:
            part = snapshot(h5, shard_subject, limits)
        total += _merge(root, part, name, ordinal)
        limits.check("max_objects", total, subject)
    return root


_SHARD_ADDRESS_BITS = 56
"""Addresses within one shard stay below 2**56 bytes (64 PiB), so a shard's place leads."""


def _merge(into: H5Node, part: H5Node, shard: str, ordinal: int = 0) -> int:
    """Add ``part``'s nodes under ``into``; returns how many nodes were visited.

    A node keeps its header address in the first shard that holds it, shifted by that shard's
    place in the index (``ordinal``): Keras writes the shards one after another in save order, and
    each in save order, so sorting siblings by the shifted address gives the order they were saved
    in, as a single file's addresses do (H5Node.address); a node with no address keeps 0."""
    shift = (ordinal + 1) << _SHARD_ADDRESS_BITS
    count = 0
    stack = [(into, part)]
    while stack:
        target, source = stack.pop()
        if target.name_attr is None:
            target.name_attr = source.name_attr
        for key, child in source.children.items():
            count += 1
            existing = target.children.get(key)
            address = shift + child.address if child.address else 0
            if child.is_dataset:
                if existing is None:  # the first shard holding a dataset wins, as Keras reads it
                    child.path = f"{shard}:{child.path}"
                    child.address = address
                    target.children[key] = child
            elif existing is None:
                target.children[key] = H5Node(path=child.path, children={}, name_attr=child.name_attr, address=address)
                stack.append((target.children[key], child))
            elif not existing.is_dataset:
                stack.append((existing, child))
    return count


def save_order(index: ShardIndex) -> dict[str, int]:
    """Position of each top-level entry (``layers/<key>`` or an attribute) in the index's
    ``weight_map``, which Keras fills in save order: a Functional's ``layers`` list in model
    order. A weights file alone keeps no order, its groups list alphabetically."""
    order: dict[str, int] = {}
    for key, _ in index.weight_map:
        top = _top(key.strip("/"))
        order.setdefault(top, len(order))
    return order


def _top(group_path: str) -> str:
    parts = group_path.split("/")
    return "/".join(parts[:2]) if parts[0] == "layers" and len(parts) > 1 else parts[0]


def in_save_order(records: list[VariableRecord], order: Mapping[str, int]) -> list[VariableRecord]:
    """Records reordered by top-level layer as the index lists them; stable within a layer."""

    def position(record: VariableRecord) -> int:
        inside = record.origin.split(":", 1)[-1]
        return order.get(_top(inside.rpartition("/vars/")[0] or "vars"), len(order))

    return sorted(records, key=position)


def load_keras_index(index: ShardIndex, limits: Limits, subject: str) -> Inventory:
    """A Keras weights-only index: named as the ``.weights.h5`` reader names the unsharded file."""
    root = join_keras_shards(index, limits)
    walker = KerasTreeWalker(subject, limits)
    records = in_save_order(walker.walk_model(root, None), save_order(index))
    notes = (
        NO_CONFIG_NOTE,
        f"sharded Keras weights: {len(index.shards)} shards joined through {index.path.name}",
        *walker.notes,
    )
    return Inventory(
        source=subject,
        loader=LoaderName.KERAS_SHARDED.value,
        records=tuple(records),
        notes=notes,
        model_name=root.children["vars"].name_attr if "vars" in root.children else None,
    )
