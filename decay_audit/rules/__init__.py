"""Rule targets, registered in one table: adding a tool is one module, one enum member and one line."""

from __future__ import annotations

import os
from collections.abc import Callable

from decay_audit.errors import OptionError
from decay_audit.kinds import KerasBackend, TargetName
from decay_audit.rules.interface import Target
from decay_audit.rules.keras3 import Keras3Target
from decay_audit.rules.name_regex import ModelGardenTarget, TfKerasTarget
from decay_audit.rules.native import NativeTarget
from decay_audit.rules.optax_mask import OptaxTarget

__all__ = ["TARGETS", "TargetName", "get_target"]


TARGETS: dict[TargetName, Callable[[], Target]] = {
    TargetName.NATIVE: NativeTarget,
    TargetName.KERAS: Keras3Target,
    TargetName.TF_KERAS: TfKerasTarget,
    TargetName.MODEL_GARDEN: ModelGardenTarget,
    TargetName.OPTAX: OptaxTarget,
}
"""Each target name → the class that holds its tool's matching semantics."""


def get_target(name: str | TargetName, keras_backend: str | None = None) -> Target:
    """The target's semantics; ``keras_backend`` matters for ``keras`` only (default: $KERAS_BACKEND
    or tensorflow), because Keras 3 matches different names on different backends."""
    try:
        target = TargetName(name)
    except ValueError:
        raise OptionError(
            "target", f"unknown target {name!r} (one of {', '.join(t.value for t in TargetName)})"
        ) from None
    if target is TargetName.KERAS:
        backend = keras_backend or os.environ.get("KERAS_BACKEND") or KerasBackend.TENSORFLOW.value
        if backend not in {b.value for b in KerasBackend}:
            raise OptionError(
                "keras_backend", f"unknown backend {backend!r} (one of {', '.join(b.value for b in KerasBackend)})"
            )
        return Keras3Target(str(backend))
    return TARGETS[target]()
