"""What every Keras 3 backend shares, whatever framework runs it: the decay knobs Keras 3
optimizers carry, how optimizers are found and labelled, and :class:`Keras3Backend`, the base
of the TensorFlow, JAX and torch backends. Kept apart from any one framework so that the JAX
and torch backends never load TensorFlow code; importing it imports neither TensorFlow nor Keras.

The framework-neutral helpers here (optimizer lists, labels, strengths, hand-written steps) serve
the tf_keras backend too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from decay_audit.probe.backends.interface import DecaySource, ProbeBackend, SourceKind, Step, Trainable

DECOUPLED_KNOBS = ("weight_decay", "adam_weight_decay")
"""Optimizer attributes that shrink weights directly, read from keras/src/optimizers/*.py (Keras 3.15):
every optimizer's base-class ``weight_decay``; Muon's ``adam_weight_decay`` for the variables it
updates with AdamW (non-matrix ones, embeddings, excluded layers)."""
COUPLED_KNOBS = ("l1_regularization_strength", "l2_regularization_strength", "l2_shrinkage_regularization_strength")
"""Penalties inside an optimizer's own update rule (Ftrl): they act like a penalty gradient, on every
variable the optimizer updates, ignoring ``exclude_from_weight_decay``."""
L1_KNOBS = ("l1_regularization_strength",)
"""The knobs of ``COUPLED_KNOBS`` that are an L1 penalty (Ftrl): switched as :attr:`SourceKind.L1`, their
own twin, and reported apart from decay (sparsity, not a shrink in proportion to the weight)."""
NOT_DECAY = ("beta_2_decay",)
"""Optimizer arguments whose name says decay but which do not decay weights (Adafactor's second-moment
decay exponent). tests pin that every ``keras.optimizers`` argument naming decay or regularization is
in one of these three tuples."""


def knob_kind(knob: str) -> SourceKind:
    """How an optimizer knob of ``DECOUPLED_KNOBS`` or ``COUPLED_KNOBS`` reaches the weights (Keras 3 and
    tf_keras optimizers carry the same names): decoupled, an L1 penalty, or another coupled penalty."""
    if knob in DECOUPLED_KNOBS:
        return SourceKind.DECOUPLED
    return SourceKind.L1 if knob in L1_KNOBS else SourceKind.COUPLED


def inner_optimizer(optimizer: Any) -> Any:
    """LossScaleOptimizer (what compile() wraps under mixed_float16) holds the real one."""
    return getattr(optimizer, "inner_optimizer", optimizer)


def unwrap_optimizer(optimizer: Any) -> list[Any]:
    """The optimizers a top-level one stands for: a LossScaleOptimizer's inner one, each of a
    MultiOptimizer's sub-optimizers (the decay knobs live on these)."""
    inner = inner_optimizer(optimizer)
    subs = getattr(inner, "optimizers", None)  # keras.optimizers.MultiOptimizer
    if isinstance(subs, (list, tuple)) and subs and type(inner).__name__ == "MultiOptimizer":
        return [inner_optimizer(s) for s in subs]
    return [inner]


def listed_optimizers(setup: Any) -> list[Any]:
    """The set-up's ``optimizer`` then its ``optimizers`` (each object once), as the user gave them
    (also tf_keras' top-level optimizers)."""
    listed = list(getattr(setup, "optimizers", ()) or ())
    if setup.optimizer is not None and all(o is not setup.optimizer for o in listed):
        listed.insert(0, setup.optimizer)
    return listed


def named_optimizers(setup: Any) -> list[tuple[Any, str]]:
    """The optimizer objects the set-up's step calls (wrappers included), each with where it was
    found: the set-up's ``optimizer``/``optimizers``, then optimizers a subclassed model holds as
    attributes for its own ``train_step`` (``self.head_optimizer.apply(...)``)."""
    import keras

    listed = listed_optimizers(setup)
    named = [(o, f"optimizers[{i}]") for i, o in enumerate(listed)]
    seen = {id(o) for o in listed}
    for attribute, value in sorted(vars(setup.model).items()):
        candidates = value if isinstance(value, (list, tuple)) else [value]
        for position, candidate in enumerate(candidates):
            if isinstance(candidate, keras.optimizers.Optimizer) and id(candidate) not in seen:
                seen.add(id(candidate))
                suffix = f"[{position}]" if isinstance(value, (list, tuple)) else ""
                named.append((candidate, f"model.{attribute.lstrip('_')}{suffix}"))
    return named


def top_level_optimizers(setup: Any) -> list[Any]:
    """The optimizer objects the set-up's step calls (wrappers included), in order."""
    return [optimizer for optimizer, _ in named_optimizers(setup)]


def variable_path(variable: Any) -> str:
    path = getattr(variable, "path", None) or variable.name
    return path[:-2] if path.endswith(":0") else path


def nonzero_float(value: Any) -> float | None:
    """A knob's configured strength as a float; None when it is unset, not a number, not finite or
    zero (a knob at zero decays nothing, so there is nothing to switch)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(np.asarray(value))
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) and number != 0.0 else None


def unique_by_id(items: Any) -> list[Any]:
    """``items`` in order, each object once (variables and optimizers compare by identity)."""
    seen, result = set(), []
    for item in items:
        if id(item) not in seen:
            seen.add(id(item))
            result.append(item)
    return result


def positional_labels(optimizers: Sequence[Any]) -> dict[int, str]:
    """``AdamW`` alone, ``optimizers[1] AdamW`` when there are several (by ``id``)."""
    return {
        id(o): (type(o).__name__ if len(optimizers) == 1 else f"optimizers[{i}] {type(o).__name__}")
        for i, o in enumerate(optimizers)
    }


def regularizer_text(regularizer: Any) -> tuple[str, float]:
    config: dict[str, Any] = {}
    try:
        config = regularizer.get_config() or {}
    except (AttributeError, NotImplementedError, TypeError):
        pass
    numbers = {k: float(v) for k, v in config.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    text = ", ".join(f"{k}={v:g}" for k, v in numbers.items())
    return f"{type(regularizer).__name__}({text})", max(numbers.values(), default=float("nan"))


def regularizer_parts(regularizer: Any, regularizers: Any = None) -> list[tuple[SourceKind, Any, str]]:
    """``(kind, regularizer, label suffix)`` for each separately switched part: ``L1`` is an L1 source;
    ``L1L2`` with both strengths becomes its ``L1`` and its ``L2`` (each its own twin), so the L2 part is
    judged as decay and the L1 part reported apart; anything else is one coupled source. ``regularizers``
    is the module whose ``L1``/``L2``/``L1L2`` classes the model uses: ``keras.regularizers`` (default)
    or ``tf_keras.regularizers``, which has the same three classes with the same ``l1``/``l2`` fields."""
    if regularizers is None:
        import keras

        regularizers = keras.regularizers
    if isinstance(regularizer, regularizers.L1):
        return [(SourceKind.L1, regularizer, "")]
    if type(regularizer) is regularizers.L1L2:
        l1, l2 = float(regularizer.l1), float(regularizer.l2)
        if l1 and l2:
            return [
                (SourceKind.L1, regularizers.L1(l1), " (its L1 part)"),
                (SourceKind.COUPLED, regularizers.L2(l2), " (its L2 part)"),
            ]
        if l1:
            return [(SourceKind.L1, regularizer, "")]
    return [(SourceKind.COUPLED, regularizer, "")]


def regularizer_sources(
    regularizer: Any, parts: list[tuple[SourceKind, Any, str]], handles: Sequence[Any], path: str
) -> list[DecaySource]:
    """One :class:`DecaySource` per part of :func:`regularizer_parts`, each with its own handle: labelled
    by the user's regularizer (``L1L2(l1=0.01, l2=0.001) (its L2 part)``), valued by the part's own
    strength when it was split. ``regularizer`` None: a tf_keras penalty whose regularizer object could
    not be found (reported as ``regularizer``, strength 1)."""
    text, value = regularizer_text(regularizer) if regularizer is not None else ("regularizer", 1.0)
    return [
        DecaySource(
            kind,
            "model",
            f"regularizer {text}{share}",
            regularizer_text(part)[1] if share else value,
            (path,),
            None,
            handle,
        )
        for (kind, part, share), handle in zip(parts, handles)
    ]


def _summed(knobs: list[tuple[Any, Any]], parts: list[tuple[SourceKind, Any, str]]) -> Any:
    """One regularizer adding the separately scaled parts of a split ``L1L2``. Its ``regularizer`` is
    the L2 part alone: what ``penalty_gradients`` differentiates as the coupled decay's own gradient."""
    import keras

    class _SummedRegularizer(keras.regularizers.Regularizer):
        def __init__(self, wrappers: list[Any], regularizer: Any):
            self.wrappers, self.regularizer = wrappers, regularizer

        def __call__(self, x: Any) -> Any:
            total = self.wrappers[0](x)
            for wrapper in self.wrappers[1:]:
                total = total + wrapper(x)
            return total

    coupled = next(part for kind, part, _ in parts if kind is SourceKind.COUPLED)
    return _SummedRegularizer([wrapper for wrapper, _ in knobs], coupled)


NO_DATA_LOSS_NOTE = (
    "hand-written train_step without data_loss: penalties written into the step itself "
    "are not measured (give data_loss); optimizer decay and regularizers are"
)
"""What verify says when a hand-written step has no data loss to build its reference from (every backend)."""


def call_hand_written(step: Any, model: Any, optimizer: Any) -> Step:
    """``train_step(model, optimizer, x, y)`` as documented; a closure over its model and
    optimizer may also take ``(x, y)`` or one ``(x, y)`` batch (Model Garden style)."""
    import inspect

    try:
        parameters = inspect.signature(getattr(step, "python_function", step)).parameters.values()
        positional = [
            p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        count = None if any(p.kind is p.VAR_POSITIONAL for p in parameters) else len(positional)
    except (TypeError, ValueError):
        count = None
    if count == 2:
        return lambda x, y: step(x, y)
    if count == 1:
        return lambda x, y: step((x, y))
    return lambda x, y: step(model, optimizer, x, y)


class Keras3Backend(ProbeBackend):
    """What every Keras 3 backend shares: the optimizers (unwrapped), the decay knobs they and the
    weight regularizers carry, the state to snapshot, the reference step's guard.

    How a knob becomes a runtime value is the backend's own: on TensorFlow a ``tf.Variable`` the
    compiled step reads (``tensorflow``), on JAX and torch a Python number in the
    attribute (``keras3_eager``); each subclass says so in :meth:`_optimizer_knob` and
    :meth:`_regularizer_knob`."""

    def __init__(self) -> None:
        self._notes: list[str] = []
        self._knobs: list[Any] = []  # the handles switchable() installed (JAX keys its compilations on them)

    def optimizers(self, setup: Any) -> list[Any]:
        return unique_by_id(optimizer for top in top_level_optimizers(setup) for optimizer in unwrap_optimizer(top))

    def _labels(self, setup: Any) -> dict[int, str]:
        """Each optimizer's label for the report, by ``id``."""
        return positional_labels(self.optimizers(setup))

    # ---- knobs ----------------------------------------------------------------------
    @contextlib.contextmanager
    def switchable(self, setup: Any) -> Iterator[list[DecaySource]]:
        sources: list[DecaySource] = []
        restore: list[tuple[Any, str, Any]] = []
        labels = self._labels(setup)
        try:
            for optimizer in self.optimizers(setup):
                self._check_knobs(optimizer, labels[id(optimizer)])
                for knob in DECOUPLED_KNOBS + COUPLED_KNOBS:
                    if not hasattr(optimizer, knob):
                        continue
                    original = getattr(optimizer, knob)
                    value = nonzero_float(original)
                    if value is None:
                        continue
                    restore.append((optimizer, knob, original))
                    handle = self._optimizer_knob(optimizer, knob, value)
                    self._knobs.append(handle)
                    sources.append(
                        DecaySource(knob_kind(knob), labels[id(optimizer)], knob, value, None, optimizer, handle)
                    )
            for variable in setup.model.trainable_variables:
                regularizer = getattr(variable, "regularizer", None)
                if regularizer is None:
                    continue
                parts = regularizer_parts(regularizer)
                part_knobs = [self._regularizer_knob(part) for _, part, _ in parts]
                restore.append((variable, "regularizer", regularizer))
                variable.regularizer = part_knobs[0][0] if len(part_knobs) == 1 else _summed(part_knobs, parts)
                handles = [handle for _, handle in part_knobs]
                self._knobs.extend(handles)
                sources += regularizer_sources(regularizer, parts, handles, variable_path(variable))
            yield sources
        finally:
            self._knobs = []
            for owner, attribute, original in reversed(restore):
                setattr(owner, attribute, original)

    def _check_knobs(self, optimizer: Any, label: str) -> None:
        """Note what the optimizer carries that :meth:`switchable` cannot switch (default: nothing)."""

    def _optimizer_knob(self, optimizer: Any, knob: str, value: float) -> Any:
        """Put a runtime value of ``value`` in ``optimizer.<knob>``; return its handle (``set(scale)``)."""
        raise NotImplementedError

    def _regularizer_knob(self, regularizer: Any) -> tuple[Any, Any]:
        """``(wrapper, handle)``: the regularizer times a runtime scale, and the scale's handle."""
        raise NotImplementedError

    def set_scale(self, source: DecaySource, scale: float) -> None:
        source.handle.set(scale)

    def learning_rate(self, optimizer: Any) -> float:
        """Keras 3's ``learning_rate`` property evaluates a schedule at ``iterations``: the next update's."""
        try:
            return float(np.asarray(optimizer.learning_rate))
        except (TypeError, ValueError, AttributeError):
            return float("nan")

    # ---- state ----------------------------------------------------------------------
    def built(self, setup: Any) -> bool:
        return all(getattr(o, "built", False) for o in top_level_optimizers(setup))

    def build(self, setup: Any) -> None:
        """A single optimizer is built on every trainable variable, as ``fit`` builds it; several
        optimizers each own a subset only their step knows, so they are left to a warm-up step."""
        tops = top_level_optimizers(setup)
        if len(tops) == 1 and not getattr(tops[0], "built", False):
            tops[0].build(setup.model.trainable_variables)

    def state_variables(self, setup: Any) -> list[Any]:
        candidates = list(setup.model.variables)
        for top in top_level_optimizers(setup):
            candidates += list(top.variables)
            for optimizer in unwrap_optimizer(top):
                candidates += list(optimizer.variables)
        candidates += list(getattr(setup.model, "metrics_variables", []) or [])
        return unique_by_id(candidates)

    def trainable(self, setup: Any) -> list[Trainable]:
        return [Trainable(variable_path(v), v) for v in setup.model.trainable_variables]

    def write(self, variables: Sequence[Any], values: Sequence[np.ndarray]) -> None:
        for variable, value in zip(variables, values):
            variable.assign(value)

    # ---- steps ----------------------------------------------------------------------
    def make_reference_step(self, setup: Any) -> Step | None:
        if setup.train_step is None:
            return None
        model = setup.model
        if setup.data_loss is None and not (getattr(model, "compiled", False) and getattr(model, "loss", None)):
            self._notes.append(NO_DATA_LOSS_NOTE)
            return None
        return self._data_loss_step(setup)

    def _data_loss_step(self, setup: Any) -> Step:
        """The set-up's update with its data loss alone (the reference for a hand-written step)."""
        raise NotImplementedError

    def ema_overwrite(self, setup: Any) -> bool:
        """Keras 3.15 ``_backend_apply_gradients`` (and the JAX trainer's own): after the update, when
        ``(iterations + 1) % ema_overwrite_frequency == 0``, the weights are replaced by their moving
        average (``iterations`` counts updates under gradient accumulation)."""
        for optimizer in self.optimizers(setup):
            frequency = getattr(optimizer, "ema_overwrite_frequency", None)
            if not getattr(optimizer, "use_ema", False) or not frequency:
                continue
            try:
                iterations = int(np.asarray(optimizer.iterations))
            except (TypeError, ValueError, AttributeError):
                continue
            if (iterations + 1) % int(frequency) == 0:
                return True
        return False

    def update_every(self, setup: Any) -> int:
        """Keras 3 gradient accumulation (``gradient_accumulation_steps``): decay only on updating steps."""
        return max([int(getattr(o, "gradient_accumulation_steps", None) or 1) for o in self.optimizers(setup)] or [1])

    def notes(self, setup: Any) -> list[str]:
        return list(dict.fromkeys(self._notes))
