"""What every loader shares: the limits it enforces and the name it reports."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from decay_audit.errors import LimitExceededError, ModelLoadError
from decay_audit.kinds import TextEnum


class LoaderName(TextEnum):
    """Which reader produced an inventory; shown as ``loader`` in every report."""

    KERAS_ZIP = "keras-zip"
    LEGACY_H5 = "legacy-h5"
    WEIGHTS_H5 = "weights-h5"
    SAVED_MODEL = "saved-model"
    KERAS_SHARDED = "keras-sharded"
    """A Keras ``.weights.json`` index and its ``.weights.h5`` shards, joined."""
    HF_SHARDED = "hf-sharded"
    """A Hugging Face ``tf_model.h5.index.json`` and its ``tf_model-0000N-of-0000M.h5`` shards, joined."""
    KERAS_DIRECTORY = "keras-directory"
    """A keras_hub preset (``save_to_preset``) or an unzipped Keras model directory."""
    LORA_ADAPTER = "lora-adapter"
    """A keras_hub ``save_lora_weights`` file: LoRA factors only, not a model."""
    LIVE_KERAS = "live-keras"
    LIVE_MODULE = "live-tf-module"


@dataclass(frozen=True)
class Limits:
    """Bounds checked against sizes the input declares, before anything is read.

    Model files come from hubs and CI artifacts; a scanner that believes a header
    claiming 50 GiB of JSON is a denial of service. Raise a bound with the CLI's
    ``--limit NAME=VALUE`` when a real model needs it.
    """

    max_config_bytes: int = 256 * 1024 * 1024
    """config.json, metadata.json, keras_metadata.pb, an h5 ``model_config`` attribute."""
    max_config_depth: int = 256
    """Nesting depth of config.json (each nested layer adds about four levels)."""
    max_graph_bytes: int = 2 * 1024 * 1024 * 1024
    """saved_model.pb, which is read whole."""
    max_variables: int = 100_000
    """Variables in one model."""
    max_objects: int = 200_000
    """Groups and datasets in one h5 index, or nodes in one SavedModel object graph
    (ConvNeXtBase: about 1,000; a 7B-parameter LLM: a few thousand)."""
    max_memory_mib: int = 1024
    """Address space of the process that parses a file (a bound, not a reservation). Fuzzing found
    .h5 files whose corrupt global heap makes libhdf5 allocate ~4 GiB before failing."""
    read_seconds: int = 60
    """Wall time allowed to read one file; 0 reads in-process without isolation."""
    max_functions: int = 100_000
    """Functions in a SavedModel's function library (read for graph-use evidence)."""

    def check(self, name: str, value: int, subject: str) -> None:
        limit = getattr(self, name)
        if value > limit:
            option = name.removeprefix("max_").replace("_", "-")
            raise LimitExceededError(
                subject,
                f"{option} {value} exceeds the limit {limit} (raise it with --limit {option}=N)",
            )


DEFAULT_LIMITS = Limits()


def parse_json(text: bytes | str, subject: str, limits: Limits) -> Any:
    """json.loads with the nesting bound checked, turning every failure into a one-line error."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise LimitExceededError(subject, "JSON nested deeper than Python can parse") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(subject, f"not valid JSON ({exc})") from None
    limits.check("max_config_depth", _depth(text), subject)
    return value


_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'"[]{}')


def _depth(text: bytes | str) -> int:
    """Nesting depth of JSON text that ``json.loads`` accepted: its brackets outside strings.

    Counted on the text in C (``bytes.replace``/``translate``, numpy), not by walking the
    parsed value: a 6,000-variable config has ~140,000 containers and the walk cost 90 ms.
    In valid JSON a backslash occurs only in a string and escapes the one character after
    it, so dropping escaped backslashes, then escaped quotes, leaves quotes that pair up.
    """
    import numpy as np

    if isinstance(text, str):
        data = text.encode("utf-8", "surrogatepass")
    else:
        encoding = json.detect_encoding(text)
        data = text if encoding == "utf-8" else text.decode(encoding).encode("utf-8", "surrogatepass")
    data = data.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = np.frombuffer(data.translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    quote = kept == ord('"')
    brackets = kept[~quote & ((np.cumsum(quote) & 1) == 0)]
    if not brackets.size:
        return 1
    opening = (brackets == ord("[")) | (brackets == ord("{"))
    return max(1, int(np.cumsum(np.where(opening, 1, -1)).max()))
