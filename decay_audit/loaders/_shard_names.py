"""What shard files and their indexes are called, by the writers that make them.

Names only, no reading: the dispatcher, the discovery walk and the HDF5 reader all ask
"is this a shard, and where is its index?" before anything is opened.

- Keras 3 ``ShardedH5IOStore`` (keras/src/saving/saving_lib.py 3.15): ``<base>_00000.weights.h5``,
  ``<base>_00001.weights.h5``, ... beside ``<base>.weights.json`` (keras_hub presets: ``model``).
- transformers ``save_pretrained(max_shard_size=...)`` (modeling_tf_utils.py 4.49):
  ``tf_model-00001-of-00003.h5`` ... beside ``tf_model.h5.index.json``.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

KERAS_INDEX_SUFFIX = ".weights.json"
HF_INDEX_NAME = "tf_model.h5.index.json"  # transformers' TF2_WEIGHTS_INDEX_NAME (4.49)
_KERAS_SHARD = re.compile(r"^(?P<base>.+)_(?P<number>\d{5})\.weights\.h5$")
_HF_SHARD = re.compile(r"^(?P<stem>.+)-(?P<number>\d{5})-of-(?P<total>\d{5})\.h5$")


def shard_index_name(name: str) -> str | None:
    """The index file a shard's writer puts beside it, from the shard's name; None for other names."""
    hf = _HF_SHARD.match(name)
    if hf:
        return f"{hf['stem']}.h5.index.json"
    keras = _KERAS_SHARD.match(name)
    if keras:
        return f"{keras['base']}{KERAS_INDEX_SUFFIX}"
    return None


def hf_shard_position(name: str) -> tuple[int, int] | None:
    """(shard number, shard count) a transformers shard's name declares; None for other names.
    Only transformers writes ``-NNNNN-of-NNNNN.h5``, so such a file alone is known to be a shard."""
    match = _HF_SHARD.match(name)
    return (int(match["number"]), int(match["total"])) if match else None


def regular_file(path: Path) -> bool:
    """stat only, never open: a FIFO named like an index is never waited on."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def index_beside(path: Path) -> Path | None:
    """The index of the sharded checkpoint ``path`` is named as a shard of, when it sits beside it."""
    name = shard_index_name(path.name)
    if name is None:
        return None
    index = path.with_name(name)
    return index if regular_file(index) else None


def is_shard_index(path: Path, head: bytes) -> bool:
    """Sniffer: a JSON object whose first bytes hold a ``weight_map`` naming ``.h5`` files.

    Both writers put ``metadata`` (a few bytes) then ``weight_map`` first, so its first entry is in
    the head. A ``model.safetensors.index.json`` (PyTorch weights) names ``.safetensors`` files and
    is left alone."""
    text = head.lstrip()
    return text.startswith(b"{") and b'"weight_map"' in text and b'.h5"' in text


def refusal(path: Path) -> str:
    """Why a shard whose index is not beside it is refused, naming what to scan instead."""
    index = shard_index_name(path.name) or HF_INDEX_NAME
    position = hf_shard_position(path.name)
    which = f"shard {position[0]} of {position[1]}" if position else "one shard"
    return (
        f"is {which} of a sharded checkpoint, not a whole model: scan its index {index} "
        "(not found beside it) or the directory holding the index and every shard"
    )
