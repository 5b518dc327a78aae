"""Read the optimizer a saved file would recreate, from its compile config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from decay_audit.inventory import OptimizerConfig


def optimizer_from_compile_config(compile_config: Any) -> OptimizerConfig | None:
    """``compile_config.optimizer`` as written by ``model.save`` (Keras 3) or ``training_config`` (legacy h5).

    Exclusions set with ``exclude_from_weight_decay`` are never in it (shared FACTS):
    a file whose optimizer has ``weight_decay > 0`` resumes training decaying every variable.
    """
    if not isinstance(compile_config, Mapping):
        return None
    optimizer = compile_config.get("optimizer") or compile_config.get("optimizer_config")
    if not isinstance(optimizer, Mapping):
        return None
    class_name = optimizer.get("class_name")
    config = optimizer.get("config")
    if not isinstance(class_name, str) or not isinstance(config, Mapping):
        return None
    inner = config.get("inner_optimizer")  # LossScaleOptimizer wraps the real one
    if class_name == "LossScaleOptimizer" and isinstance(inner, Mapping):
        wrapped = optimizer_from_compile_config({"optimizer": inner})
        if wrapped is not None:
            return OptimizerConfig(
                f"LossScaleOptimizer({wrapped.class_name})", wrapped.weight_decay, wrapped.learning_rate, config
            )
    weight_decay = config.get("weight_decay")
    return OptimizerConfig(
        class_name=class_name,
        weight_decay=float(weight_decay) if isinstance(weight_decay, (int, float)) else None,
        learning_rate=config.get("learning_rate"),
        config=dict(config),
    )
