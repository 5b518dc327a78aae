"""The user's training set-up, in one shape whatever form it was given in.

``--setup file.py:make`` imports a file the user names explicitly (as pytest imports a
conftest) and calls ``make()``. A model FILE is rebuilt with ``safe_mode=True`` only,
with custom classes importable only from modules the user names (``--custom-module``).

Everything that runs the user's code or the probe runs inside :func:`at_stage`, so a
failure surfaces as one :class:`SetupError` naming the stage (import, make(), batch,
step, measurement) and the cause, never as a traceback that a CI gate would read as a
finding (exit 1). The original exception stays chained (``__cause__``) for ``--debug``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decay_audit.errors import DecayAuditError, ModelLoadError, OptionError, SetupError, Stage, UsageError

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_TF_NODE = re.compile(r"\{\{function_node [^}]*\}\}\s*")
_QUOTED_ERROR = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt)\w*: \S")


def describe_exception(exc: BaseException, limit: int = 300) -> str:
    """One line for the cause: the exception type and its most telling line.

    TensorFlow's runtime errors start with a heading ("Graph execution error:") and put the
    reason on a later line; an error raised inside a ``tf.function`` reads "in user code:",
    then file lines, then the original "RuntimeError: ..." last; Keras' call errors start
    with "Exception encountered when calling ...". Headings and file lines are skipped,
    ANSI colour codes (Keras 3.15 bolds op names) and TF node names dropped.
    """
    text = _TF_NODE.sub("", _ANSI.sub("", str(exc)))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    quoted = [line for line in lines if _QUOTED_ERROR.match(line)]
    if quoted and any(line.startswith("in user code") for line in lines):
        line = quoted[-1]  # carries its own type name
    else:
        headings = (
            "Graph execution error",
            "Exception encountered when calling",
            "Detected at node",
            'File "',
            "Traceback",
            "Arguments received by",
            "•",
            "Stack trace",
            "[[",
            "in user code",
        )
        telling = [line for line in lines if not line.startswith(headings)]
        line = (telling or lines or [""])[0]
        name = type(exc).__name__
        line = f"{name}: {line}" if line else name
    return line if len(line) <= limit else line[: limit - 3] + "..."


@contextlib.contextmanager
def at_stage(stage: Stage, subject: str) -> Iterator[None]:
    """Turn any failure inside into a :class:`SetupError` for ``stage`` (errors already ours pass through)."""
    try:
        yield
    except DecayAuditError:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the user's code may raise anything
        raise SetupError(subject, describe_exception(exc), stage) from exc


@dataclass(frozen=True)
class TrainingSetup:
    model: Any
    """The keras.Model whose trainable variables are verified."""
    optimizer: Any
    """The optimizer that trains it (a LossScaleOptimizer wrapper is fine)."""
    train_step: Callable[..., Any] | None = None
    """A hand-written step ``train_step(model, optimizer, x, y)``; None = Keras' own train_step semantics."""
    data_loss: Callable[[Any, Any], Any] | None = None
    """The loss without any penalty term: what the no-decay twin step minimises."""
    description: str = ""
    """How the set-up was given (``train.py:make``, a model file and its optimizer), for the report."""
    optimizers: tuple[Any, ...] = ()
    """Every optimizer the step applies when there are several (a backbone and a head optimizer in
    a custom ``train_step``); ``optimizer`` is the first. Empty = ``optimizer`` alone."""
    batch: Any = None
    """The set-up's own data: an ``(x, y)`` tuple, ``x`` alone, or a dataset/iterator of either
    (``tf.data.Dataset``, ``keras.utils.PyDataset``, a generator). None = synthetic batches."""


SETUP_KEYS = ("model", "optimizer", "optimizers", "train_step", "data_loss", "batch", "dataset")


def optimizer_of(model: Any) -> Any:
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise SetupError(str(getattr(model, "name", "model")), "model is not compiled: no optimizer to verify")
    return optimizer


def setup_from_object(obj: Any, description: str) -> TrainingSetup:
    """Accepts a compiled keras.Model, a (model, optimizer) pair, or a mapping with model/optimizer
    and optionally train_step, data_loss and the set-up's own ``batch`` (or ``dataset``)."""
    if isinstance(obj, TrainingSetup):
        return obj
    if isinstance(obj, Mapping):
        if "model" not in obj:
            raise SetupError(description, "the mapping needs a 'model' key")
        unknown = set(obj) - set(SETUP_KEYS)
        if unknown:
            raise SetupError(description, f"unknown keys {sorted(unknown)} (expected {', '.join(SETUP_KEYS)})")
        if obj.get("batch") is not None and obj.get("dataset") is not None:
            raise SetupError(description, "give either 'batch' or 'dataset', not both")
        model = obj["model"]
        _check_model(model, description)
        several = tuple(obj.get("optimizers") or ())
        optimizer = obj.get("optimizer") or (several[0] if several else optimizer_of(model))
        batch = obj.get("batch") if obj.get("batch") is not None else obj.get("dataset")
        return TrainingSetup(model, optimizer, obj.get("train_step"), obj.get("data_loss"), description, several, batch)
    if isinstance(obj, tuple) and len(obj) == 2:
        _check_model(obj[0], description)
        return TrainingSetup(obj[0], obj[1], description=description)
    if hasattr(obj, "trainable_variables") and hasattr(obj, "optimizer"):
        return TrainingSetup(obj, optimizer_of(obj), description=description)
    raise SetupError(
        description,
        "make() must return a compiled keras.Model, a (model, optimizer) pair, "
        f"or a mapping with 'model' and 'optimizer' (got {type(obj).__name__})",
    )


def _check_model(model: Any, description: str) -> None:
    if not hasattr(model, "trainable_variables"):
        raise SetupError(description, f"'model' is a {type(model).__name__}, not a keras.Model")


def load_setup(spec: str) -> TrainingSetup:
    """``path/to/file.py:make`` → the set-up ``make()`` returns.

    Failures name their stage: ``import`` (the file raised while importing), ``make()``
    (the factory raised, or returned something that is not a set-up).
    """
    path_text, _, function_name = spec.rpartition(":")
    if not path_text or not function_name:
        raise OptionError("setup", f"expected FILE.py:FUNCTION, got {spec!r}")
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
        with at_stage(Stage.IMPORT, str(path)):
            try:
                module_spec.loader.exec_module(module)
            except SyntaxError as exc:
                raise SetupError(str(path), f"syntax error line {exc.lineno}: {exc.msg}", Stage.IMPORT) from exc
    finally:
        sys.path.pop(0)
    factory = getattr(module, function_name, None)
    if not callable(factory):
        raise UsageError(str(path), f"has no function {function_name!r}")
    with at_stage(Stage.MAKE, spec):
        made = factory()
    return setup_from_object(made, spec)


OPTIMIZERS = (
    "sgd",
    "adam",
    "adamw",
    "adamax",
    "nadam",
    "rmsprop",
    "adagrad",
    "adadelta",
    "lion",
    "lamb",
    "adafactor",
    "ftrl",
)


def optimizer_name(optimizer: str) -> str:
    """``--optimizer``'s value as Keras' ``optimizers.get`` spells it (lower case), or an
    :class:`OptionError` listing the choices: checked once here, for verify's cheap checks before
    any Keras import and again when the model file is paired with it."""
    name = optimizer.lower()
    if name not in OPTIMIZERS:
        raise OptionError("optimizer", f"unknown optimizer {optimizer!r} (one of {', '.join(OPTIMIZERS)})")
    return name


def setup_from_model_file(
    path: Path,
    optimizer: str | None,
    learning_rate: float | None,
    weight_decay: float | None,
    exclude_var_names: tuple[str, ...] = (),
    custom_modules: tuple[str, ...] = (),
) -> TrainingSetup:
    """Rebuild a model file safely and pair it with the optimizer given on the command line,
    or, without ``--optimizer``, the one its compile config recreates (what load_model gives)."""
    import keras

    for module in custom_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise OptionError("custom_module", f"cannot import {module!r} ({exc})") from None
    try:
        model = keras.saving.load_model(path, compile=optimizer is None, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - Keras raises many types for unloadable files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(
            str(path),
            f"cannot rebuild the model safely ({first[:300]}); "
            "name modules that define custom classes with --custom-module",
        ) from None
    if optimizer is None:
        saved = getattr(model, "optimizer", None)
        if saved is None:
            raise UsageError(str(path), "the file holds no compile config: give --optimizer")
        if exclude_var_names:
            saved.exclude_from_weight_decay(var_names=list(exclude_var_names))
        return TrainingSetup(model, saved, description=f"{path} with its saved optimizer")
    name = optimizer_name(optimizer)
    kwargs: dict[str, Any] = {"learning_rate": learning_rate if learning_rate is not None else 1e-3}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    built = keras.optimizers.get({"class_name": name, "config": kwargs})
    if exclude_var_names:
        built.exclude_from_weight_decay(var_names=list(exclude_var_names))
    model.compile(optimizer=built, loss=model.loss if getattr(model, "loss", None) else "mse")
    return TrainingSetup(model, built, description=f"{path} with {type(built).__name__}({kwargs})")
