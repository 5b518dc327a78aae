"""Import TensorFlow without its start-up chatter on stderr.

TensorFlow 2.21 writes absl and oneDNN notices (and, on machines without a GPU driver,
a cuInit error) straight to file descriptor 2 when it is imported and when devices are
first listed, whatever TF_CPP_MIN_LOG_LEVEL says. decay-audit promises one stderr line
per input error, so those two moments run with fd 2 pointed at /dev/null; the second comes
after the user's set-up is imported, which may configure devices first.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def silenced_stderr() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def import_tensorflow() -> Any:
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with silenced_stderr():
        import keras  # noqa: F401 - imports TensorFlow and registers Keras' classes
        import tensorflow as tf
    # Devices are NOT listed here: that initialises them, and a set-up that places its own devices
    # (``tf.config.set_logical_device_configuration`` for MirroredStrategy, as the TensorFlow guide
    # does it) must run before that. :func:`initialise_devices` does it later, silenced as well.
    return tf


def initialise_devices() -> None:
    """Initialise TensorFlow's devices with the start-up notices silenced (a no-op once done): after
    the set-up was imported and built, so its own device configuration came first."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return
    with silenced_stderr():
        tf.config.list_logical_devices()
