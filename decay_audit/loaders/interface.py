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
    limits.check("max_config_depth", _depth(value), subject)
    return value


def _depth(value: Any) -> int:
    """Iterative, so a hostile file cannot blow the interpreter's stack here either.

    Only containers are pushed: a ConvNeXt config has ~40,000 scalars and ~6,000 containers.
    """
    deepest = 1
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > deepest:
            deepest = depth
        kind = type(item)
        children = item.values() if kind is dict else item if kind is list else ()
        inner = depth + 1
        stack.extend((child, inner) for child in children if type(child) in _CONTAINERS)
    return deepest


_CONTAINERS = frozenset({dict, list})  # json.loads builds exactly these

