"""Pieces every probe backend shares: decay sources, trainable records, devices, determinism."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from decay_audit.kinds import TextEnum


class SourceKind(TextEnum):
    DECOUPLED = "decoupled"
    """The optimizer shrinks the weight itself (``weight_decay``, ``weight_decay_rate``)."""
    COUPLED = "coupled"
    """A penalty in the loss (regularizers), passed on by the optimizer with the data gradient."""


@dataclass(frozen=True)
class DecaySource:
    """One thing that can decay weights, with the switch that turns it off for a reference step."""

    kind: SourceKind
    name: str
    """What the report calls it (``AdamW.weight_decay``, ``AdamWeightDecay.weight_decay_rate``)."""
    owner: Any
    """The optimizer (decoupled) or model (coupled) it belongs to."""
    off: Callable[[], contextlib.AbstractContextManager]
    """A fresh context manager that switches the source off while entered."""


@dataclass(frozen=True)
class Trainable:
    """One trainable variable the probe measures."""

    path: str
    """The key the intent uses (the live scan's path)."""
    variable: Any
    optimizer: Any
    """The optimizer that updates it."""


def tensorflow_device(requested: str | None) -> str:
    """``CPU``/``GPU``: the GPU when TensorFlow sees one, unless the CPU was asked for."""
    import tensorflow as tf

    if requested is not None:
        return requested.upper()
    return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"


@contextlib.contextmanager
def tensorflow_determinism() -> Iterator[None]:
    """Deterministic kernels while probing: GPU reductions (cuDNN, atomics) are otherwise not
    bit-reproducible, and twin differences would turn that noise into findings. Restored after."""
    import tensorflow as tf

    config = tf.config.experimental
    was_on = config.is_op_determinism_enabled() if hasattr(config, "is_op_determinism_enabled") else True
    if not was_on:
        config.enable_op_determinism()
    try:
        yield
    finally:
        if not was_on and hasattr(config, "disable_op_determinism"):
            config.disable_op_determinism()


JAX_DETERMINISM_FLAG = "--xla_gpu_deterministic_ops=true"


def request_xla_determinism() -> None:
    """XLA reads XLA_FLAGS once, when its GPU client starts: set before jax initialises a backend."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_gpu_deterministic_ops" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {JAX_DETERMINISM_FLAG}".strip()
