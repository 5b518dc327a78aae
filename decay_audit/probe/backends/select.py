"""Which Keras backend a ``verify`` run uses, chosen before Keras is imported.

Keras 3 fixes its backend when it is first imported (``KERAS_BACKEND``), so the CLI
settles it first: the requested backend, else ``KERAS_BACKEND``, else TensorFlow. A
backend whose framework is not importable is refused in one line (exit 2) rather than
failing inside Keras' import. tf_keras (Keras 2) set-ups always run on TensorFlow.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import sys

from decay_audit.errors import OptionError
from decay_audit.kinds import KerasBackend

BACKEND_MODULES: dict[KerasBackend, str] = {backend: backend.value for backend in KerasBackend if backend.trains}
"""Keras backend -> the package that must be importable for it (each is named as its backend)."""


VERIFY_EXTRA = "'decay-audit[verify]'"
"""What ``pip install`` needs for verify: a plain ``pip install decay-audit`` has no TensorFlow or Keras."""

_INSTALL: dict[KerasBackend, str] = {
    KerasBackend.TENSORFLOW: VERIFY_EXTRA,
    KerasBackend.JAX: "jax[cpu]",
    KerasBackend.TORCH: "torch",
}
"""What to install for a backend's framework; jax and torch are the user's choice of build, not an extra."""


def not_installed(backend: KerasBackend) -> str | None:
    """Why ``backend`` cannot train here, naming what to install, or None: its framework and Keras 3
    are both found (``find_spec``: nothing imported, so the backend is still free to choose)."""
    if importlib.util.find_spec(BACKEND_MODULES[backend]) is None:
        return f"{backend.value} is not installed: cannot probe on it (pip install {_INSTALL[backend]})"
    if importlib.util.find_spec("keras") is None:
        return f"keras is not installed: verify runs Keras 3 (pip install {VERIFY_EXTRA})"
    return None


def trainable_backend(requested: str | None) -> KerasBackend:
    """The backend named (else ``KERAS_BACKEND``, else TensorFlow), refused in one line unless Keras
    trains on it and its framework is installed: found by ``find_spec``, nothing imported, so verify's
    cheap checks and ``choose_backend`` ask the same question the same way."""
    name = (requested or os.environ.get("KERAS_BACKEND") or KerasBackend.TENSORFLOW.value).lower()
    trains = [b.value for b in KerasBackend if b.trains]
    if name == KerasBackend.NUMPY:
        raise OptionError("backend", f"numpy runs inference only: nothing trains on it (one of {', '.join(trains)})")
    if name not in trains:
        close = difflib.get_close_matches(name, trains, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise OptionError("backend", f"unknown backend {name!r} (one of {', '.join(trains)}{hint})")
    backend = KerasBackend(name)
    problem = not_installed(backend)
    if problem is not None:
        raise OptionError("backend", problem)
    return backend


def choose_backend(requested: str | None) -> KerasBackend:
    """The backend to run on; sets ``KERAS_BACKEND`` (before any Keras import) and returns it."""
    backend = trainable_backend(requested)
    name = backend.value
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
