"""The probe backends, one module per training framework, chosen in one table.

Adding a framework is one module implementing :class:`ProbeBackend` plus one line in
``BACKENDS``. Entries are ``(name, "module:Class")`` and import lazily, so choosing a
backend never imports a framework the set-up does not use. Order matters: the first
backend whose ``accepts(setup)`` is true runs the probe (put the more specific first).
"""

from __future__ import annotations

import importlib
from typing import Any

from decay_audit.errors import NoBackendError
from decay_audit.kinds import KerasBackend
from decay_audit.probe.backends.interface import DecaySource, ProbeBackend, SourceKind, Step, Trainable

BACKENDS: tuple[tuple[str, str], ...] = (
    ("tf_keras", "decay_audit.probe.backends.tf_keras:TfKerasBackend"),
    (KerasBackend.JAX.value, "decay_audit.probe.backends.jax:JaxBackend"),
    (KerasBackend.TORCH.value, "decay_audit.probe.backends.torch:TorchBackend"),
    (KerasBackend.TENSORFLOW.value, "decay_audit.probe.backends.tensorflow:TensorFlowBackend"),
)


def load_backend(name: str) -> ProbeBackend:
    """A fresh instance of the backend registered as ``name`` (backends keep per-probe notes)."""
    for entry, target in BACKENDS:
        if entry == name:
            module_name, _, class_name = target.partition(":")
            return getattr(importlib.import_module(module_name), class_name)()
    raise NoBackendError("backend", f"no probe backend named {name!r} (known: {', '.join(n for n, _ in BACKENDS)})")


def backend_for(setup: Any) -> ProbeBackend:
    """The first backend in ``BACKENDS`` that accepts ``setup``."""
    for name, _ in BACKENDS:
        try:
            backend = load_backend(name)
        except ImportError:
            continue
        if backend.accepts(setup):
            return backend
    raise NoBackendError(
        str(getattr(setup, "description", "") or "verify"),
        f"no probe backend accepts a {type(setup.model).__module__}.{type(setup.model).__name__} "
        f"model (known: {', '.join(n for n, _ in BACKENDS)})",
    )


__all__ = [
    "BACKENDS",
    "DecaySource",
    "KerasBackend",
    "NoBackendError",
    "ProbeBackend",
    "SourceKind",
    "Step",
    "Trainable",
    "backend_for",
    "load_backend",
]
