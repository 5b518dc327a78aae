"""Rule targets, registered in one table: adding a tool is one module plus one line."""

from __future__ import annotations


from decay_audit.errors import UsageError
from decay_audit.kinds import TextEnum
from decay_audit.rules.interface import Target


class TargetName(TextEnum):
    NATIVE = "native"
    KERAS = "keras"
    TF_KERAS = "tf-keras"
    MODEL_GARDEN = "model-garden"
    OPTAX = "optax"



def get_target(name: str | TargetName, keras_backend: str | None = None) -> Target:
    """The target's semantics; ``keras_backend`` matters for ``keras`` only (default: $KERAS_BACKEND
    or tensorflow), because Keras 3 matches different names on different backends."""
    from decay_audit.rules.keras3 import Keras3Target
    from decay_audit.rules.name_regex import ModelGardenTarget, TfKerasTarget
    from decay_audit.rules.native import NativeTarget
    from decay_audit.rules.optax_mask import OptaxTarget

    registry = {
        TargetName.NATIVE: NativeTarget,
        TargetName.KERAS: Keras3Target,
        TargetName.TF_KERAS: TfKerasTarget,
        TargetName.MODEL_GARDEN: ModelGardenTarget,
        TargetName.OPTAX: OptaxTarget,
    }
    try:
        target = TargetName(name)
    except ValueError:
        raise UsageError("--target", f"unknown target {name!r} (one of {', '.join(t.value for t in TargetName)})") from None
    if target is TargetName.KERAS:
        import os

        from decay_audit.rules.keras3 import BACKENDS

        backend = keras_backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
        if backend not in BACKENDS:
            raise UsageError("--keras-backend", f"unknown backend {backend!r} (one of {', '.join(BACKENDS)})")
        return Keras3Target(backend)
    return registry[target]()
