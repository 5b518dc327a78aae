"""Which Keras backend a ``verify`` run uses, chosen before Keras is imported.

Keras 3 fixes its backend when it is first imported (``KERAS_BACKEND``), so the CLI
settles it first: ``--backend``, else ``KERAS_BACKEND``, else TensorFlow. A backend
whose framework is not importable is refused in one line (exit 2) rather than failing
inside Keras' import. tf_keras (Keras 2) set-ups always run on TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from decay_audit.errors import UsageError

BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
"""Keras backend name -> the package that must be importable for it."""


def choose_backend(requested: str | None) -> str:
    """The backend to run on; sets ``KERAS_BACKEND`` (before any Keras import) and returns it."""
    name = (requested or os.environ.get("KERAS_BACKEND") or "tensorflow").lower()
    if name not in BACKEND_MODULES:
        raise UsageError("--backend", f"unknown backend {name!r} (one of {', '.join(BACKEND_MODULES)})")
    if importlib.util.find_spec(BACKEND_MODULES[name]) is None:
        raise UsageError("--backend", f"{name} is not installed: cannot probe on it "
                                      f"(pip install {'jax[cpu]' if name == 'jax' else name})")
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend") and keras.backend.backend() != name:
        raise UsageError("--backend", f"Keras is already running on {keras.backend.backend()}; "
                                      f"the backend is fixed when Keras is first imported")
    os.environ["KERAS_BACKEND"] = name
    if name == "jax":
        from decay_audit.probe.backends.jax import request_xla_determinism

        request_xla_determinism()
    elif name == "torch":
        from decay_audit.probe.backends.torch import request_cublas_determinism

        request_cublas_determinism()
    return name


def import_keras(backend: str) -> None:
    """Import Keras on ``backend`` without its start-up chatter on stderr."""
    from decay_audit.quiet_tensorflow import import_tensorflow, silenced_stderr

    if backend == "tensorflow":
        import_tensorflow()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with silenced_stderr():
        import keras  # noqa: F401


def gpu_visible() -> bool:
    """Whether the running Keras backend (or TensorFlow, for tf_keras) sees a GPU."""
    keras = sys.modules.get("keras")
    backend = keras.backend.backend() if keras is not None and hasattr(keras, "backend") else "tensorflow"
    if backend == "jax":
        import jax

        return jax.default_backend() != "cpu"
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
