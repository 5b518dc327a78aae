"""The probe backends, one line each: the first that accepts a set-up probes it."""

from __future__ import annotations

import importlib
from typing import Any

BACKENDS = (
    "decay_audit.probe.backends.tf_keras:TfKerasBackend",
    "decay_audit.probe.backends.jax:JaxBackend",
    "decay_audit.probe.backends.torch:TorchBackend",
)


def backend_for(setup: Any) -> Any | None:
    for entry in BACKENDS:
        module_name, _, class_name = entry.partition(":")
        backend = getattr(importlib.import_module(module_name), class_name)()
        if backend.accepts(setup):
            return backend
    return None
