"""The user's training set-up, in one shape whatever form it was given in.

``--setup file.py:make`` imports a file the user names explicitly (as pytest imports a
conftest) and calls ``make()``. A model FILE is rebuilt with ``safe_mode=True`` only,
with custom classes importable only from modules the user names (``--custom-module``).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decay_audit.errors import DecayAuditError, ModelLoadError, UsageError


class SetupError(DecayAuditError):
    """A training set-up that cannot be loaded or is not one of the accepted shapes."""


@dataclass(frozen=True)
class TrainingSetup:
    model: Any
    optimizer: Any
    train_step: Callable[..., Any] | None = None
    """A hand-written step ``train_step(model, optimizer, x, y)``; None = Keras' own train_step semantics."""
    data_loss: Callable[[Any, Any], Any] | None = None
    """The loss without any penalty term: what the no-decay twin step minimises."""
    description: str = ""
    optimizers: tuple[Any, ...] = ()
    """Every optimizer the step applies when there are several (a backbone and a head optimizer in
    a custom ``train_step``); ``optimizer`` is the first. Empty = ``optimizer`` alone."""


def optimizer_of(model: Any) -> Any:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise SetupError(str(getattr(model, "name", "model")), "model is not compiled: no optimizer to verify")
    return optimizer


def setup_from_object(obj: Any, description: str) -> TrainingSetup:
    """Accepts a compiled keras.Model, a (model, optimizer) pair, or a mapping with model/optimizer
    and optionally train_step and data_loss."""
    if isinstance(obj, TrainingSetup):
        return obj
    if isinstance(obj, Mapping):
        if "model" not in obj:
            raise SetupError(description, "the mapping needs a 'model' key")
        model = obj["model"]
        several = tuple(obj.get("optimizers") or ())
        optimizer = obj.get("optimizer") or (several[0] if several else optimizer_of(model))
        unknown = set(obj) - {"model", "optimizer", "optimizers", "train_step", "data_loss"}
        if unknown:
            raise SetupError(description, f"unknown keys {sorted(unknown)} "
                                          "(expected model, optimizer, optimizers, train_step, data_loss)")
        return TrainingSetup(model, optimizer, obj.get("train_step"), obj.get("data_loss"), description, several)
    if isinstance(obj, tuple) and len(obj) == 2:
        return TrainingSetup(obj[0], obj[1], description=description)
    if hasattr(obj, "trainable_variables") and hasattr(obj, "optimizer"):
        return TrainingSetup(obj, optimizer_of(obj), description=description)
    raise SetupError(description, "make() must return a compiled keras.Model, a (model, optimizer) pair, "
                                  "or a mapping with 'model' and 'optimizer'")


def load_setup(spec: str) -> TrainingSetup:
    """``path/to/file.py:make`` → the set-up ``make()`` returns."""
    path_text, _, function_name = spec.rpartition(":")
    if not path_text or not function_name:
        raise UsageError("--setup", f"expected FILE.py:FUNCTION, got {spec!r}")
    path = Path(path_text)
    if not path.is_file():
        raise UsageError(str(path), "no such file")
    module_name = f"_decay_audit_setup_{abs(hash(path.resolve()))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    if module_spec is None or module_spec.loader is None:
        raise UsageError(str(path), "cannot be imported as a Python module")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    sys.path.insert(0, str(path.parent.resolve()))
    try:
        module_spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UsageError(str(path), f"syntax error line {exc.lineno}: {exc.msg}") from None
    finally:
        sys.path.pop(0)
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise UsageError(str(path), f"has no function {function_name!r}")
    return setup_from_object(factory(), spec)


OPTIMIZERS = ("sgd", "adam", "adamw", "adamax", "nadam", "rmsprop", "adagrad", "adadelta", "lion", "lamb",
              "adafactor", "ftrl")


def setup_from_model_file(path: Path, optimizer: str | None, learning_rate: float | None,
                          weight_decay: float | None, exclude_var_names: tuple[str, ...] = (),
                          custom_modules: tuple[str, ...] = ()) -> TrainingSetup:
    """Rebuild a model file safely and pair it with the optimizer given on the command line,
    or, without ``--optimizer``, the one its compile config recreates (what load_model gives)."""
    import keras

    for module in custom_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise UsageError("--custom-module", f"cannot import {module!r} ({exc})") from None
    try:
        model = keras.saving.load_model(path, compile=optimizer is None, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for unloadable files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(str(path), f"cannot rebuild the model safely ({first[:300]}); "
                                        "name modules that define custom classes with --custom-module") from None
    if optimizer is None:
        saved = getattr(model, "optimizer", None)
        if saved is None:
            raise UsageError(str(path), "the file holds no compile config: give --optimizer")
        if exclude_var_names:
            saved.exclude_from_weight_decay(var_names=list(exclude_var_names))
        return TrainingSetup(model, saved, description=f"{path} with its saved optimizer")
    name = optimizer.lower()
    if name not in OPTIMIZERS:
        raise UsageError("--optimizer", f"unknown optimizer {optimizer!r} (one of {', '.join(OPTIMIZERS)})")
    kwargs: dict[str, Any] = {"learning_rate": learning_rate if learning_rate is not None else 1e-3}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    built = keras.optimizers.get({"class_name": name, "config": kwargs})
    if exclude_var_names:
        built.exclude_from_weight_decay(var_names=list(exclude_var_names))
    model.compile(optimizer=built, loss=model.loss if getattr(model, "loss", None) else "mse")
    return TrainingSetup(model, built, description=f"{path} with {type(built).__name__}({kwargs})")
