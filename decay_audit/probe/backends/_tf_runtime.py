"""What the Keras 3 TensorFlow backend and the tf_keras backend share because both run on
TensorFlow: knobs held in ``tf.Variable`` s, fresh traces of hand-written ``tf.function`` steps,
device and determinism. Importing it imports no TensorFlow (each helper imports it when called).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class VariableKnob:
    """A runtime strength in a ``tf.Variable`` the compiled step reads: ``variable`` holds ``value * scale``."""

    def __init__(self, variable: Any, value: float):
        self.variable, self.value = variable, value

    def set(self, scale: float) -> None:
        self.variable.assign(self.value * scale)


def fresh_trace(step: Any, notes: list[str]) -> Any:
    """A hand-written ``tf.function`` step traced before verify holds the decay knobs as constants
    in its graph: a fresh trace of the same Python code reads the probe's knobs (Keras 3 and tf_keras)."""
    traced = getattr(step, "experimental_get_tracing_count", None)
    if callable(traced) and traced() > 0 and hasattr(step, "python_function"):
        import tensorflow as tf

        step = tf.function(step.python_function)
        notes.append(
            "the hand-written train_step had been traced before verify: probed through a "
            "fresh trace of its Python function"
        )
    return step


class TensorFlowRuntime:
    """Device and determinism on TensorFlow, for the Keras 3 and the tf_keras backends (a mixin:
    put it before the :class:`ProbeBackend` base; it writes to ``self._notes``)."""

    _notes: list[str]

    def device(self, requested: str | None) -> str:
        import tensorflow as tf

        if requested is not None:
            return requested.upper()
        return "GPU" if tf.config.list_logical_devices("GPU") else "CPU"

    @contextlib.contextmanager
    def determinism(self) -> Iterator[None]:
        """TensorFlow 2.21 can switch op determinism on but offers no public way back, so it is
        switched on only where kernels can differ between runs (a visible GPU)."""
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            tf.config.experimental.enable_op_determinism()
            self._notes.append("TensorFlow op determinism switched on for the probe (GPU)")
        yield
