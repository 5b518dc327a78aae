"""Which Keras backend a ``verify`` run uses, chosen before Keras is imported.

Keras 3 fixes its backend when it is first imported (``KERAS_BACKEND``), so the CLI
settles it first: the requested backend, else ``KERAS_BACKEND``, else TensorFlow. A
backend whose framework is not importable is refused in one line (exit 2) rather than
failing inside Keras' import. tf_keras (Keras 2) set-ups always run on TensorFlow.
"""

from __future__ import annotations

import importlib.util
import os
import sys

from decay_audit.errors import OptionError
from decay_audit.kinds import KerasBackend

BACKEND_MODULES: dict[KerasBackend, str] = {backend: backend.value for backend in KerasBackend if backend.trains}
"""Keras backend -> the package that must be importable for it (each is named as its backend)."""


def choose_backend(requested: str | None) -> KerasBackend:
    """The backend to run on; sets ``KERAS_BACKEND`` (before any Keras import) and returns it."""
    name = (requested or os.environ.get("KERAS_BACKEND") or KerasBackend.TENSORFLOW.value).lower()
    if name not in BACKEND_MODULES:
        raise OptionError("backend", f"unknown backend {name!r} (one of {', '.join(BACKEND_MODULES)})")
    backend = KerasBackend(name)
    if importlib.util.find_spec(BACKEND_MODULES[backend]) is None:
        raise OptionError(
            "backend",
            f"{name} is not installed: cannot probe on it "
            f"(pip install {'jax[cpu]' if backend is KerasBackend.JAX else name})",
        )
    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend") and keras.backend.backend() != name:
        raise OptionError(
            "backend",
            f"Keras is already running on {keras.backend.backend()}; the backend is fixed when Keras is first imported",
        )
    os.environ["KERAS_BACKEND"] = name
    if backend is KerasBackend.JAX:
        from decay_audit.probe.backends.jax import request_xla_determinism

        request_xla_determinism()
    elif backend is KerasBackend.TORCH:
        from decay_audit.probe.backends.torch import request_cublas_determinism

        request_cublas_determinism()
    return backend


def import_keras(backend: str) -> None:
    """Import Keras on ``backend`` without its start-up chatter on stderr."""
    from decay_audit.quiet_tensorflow import import_tensorflow, silenced_stderr

    if backend == KerasBackend.TENSORFLOW:
        import_tensorflow()
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with silenced_stderr():
        import keras  # noqa: F401


def gpu_visible() -> bool:
    """Whether the running Keras backend (or TensorFlow, for tf_keras) sees a GPU."""
    keras = sys.modules.get("keras")
    backend = keras.backend.backend() if keras is not None and hasattr(keras, "backend") else KerasBackend.TENSORFLOW
    if backend == KerasBackend.JAX:
        import jax

        return jax.default_backend() != "cpu"
    if backend == KerasBackend.TORCH:
        import torch

        return bool(torch.cuda.is_available())
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
