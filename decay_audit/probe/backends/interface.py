"""What the twin-step probe needs from a training framework, and nothing more.

The twin-step logic (``decay_audit.probe.twin``) is written once. Everything that depends
on the framework sits behind :class:`ProbeBackend`: how to copy and restore the state,
how to run the set-up's own step, and how to turn each decay source up, down or off
*without changing anything else in the step*. One backend per framework lives beside
this file (``tensorflow.py``: Keras 3 on TensorFlow; ``jax.py``, ``torch.py``,
``tf_keras.py``; what several share in ``_keras3.py`` and ``_tf_runtime.py``), and
``decay_audit.probe.backends.BACKENDS`` is the one table that picks a backend for a set-up.

The probe's contract, which every backend must keep:

1. **One snapshot, many twins.** At every step the probe reads the complete state
   (:meth:`ProbeBackend.state_variables`), runs the real step, writes the snapshot
   back, runs a twin with some sources scaled, and so on. A variable the snapshot
   misses (a dropout seed, a metric, an optimizer slot, a second optimizer's counter)
   makes the twins start from different states and fakes decay everywhere (shared
   FACTS: ``model.variables``, not ``weights``).
2. **Twins differ only in the source scales.** Every twin runs the *same* compiled step
   as the real one; only the runtime value of the switched knobs differs. Two
   differently compiled computations round differently, and an adaptive optimizer
   (Adam) normalises a 1e-8 gradient difference into a 1e-5 update: a false "decay".
   So a backend makes each knob a runtime value (a variable the compiled step reads),
   set by :meth:`ProbeBackend.set_scale`, and compiles the step once, after
   :meth:`ProbeBackend.switchable` has installed those values. A framework
   whose compiler bakes attribute values in (a jitted function that reads
   ``optimizer.weight_decay`` as a Python float) may instead compile once per distinct
   set of scales, provided the real step goes through the same compilation path as its
   twins (never an eager reference against a compiled real step).
3. **Scale, not only off.** ``set_scale(source, 0.0)`` switches a source off;
   ``set_scale(source, k)`` multiplies it by ``k``. A decay factor changes how much a
   variable is decayed, never *which* variables are (exclusions select by object or
   name, not by strength), so at fine-tuning rates (lr*wd = 5e-7 per step is below
   float32's resolution of a weight) the probe measures selection with an amplified
   twin and reports the configured magnitude.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from decay_audit.kinds import TextEnum


class SourceKind(TextEnum):
    """How a decay source reaches a weight; the report keeps the two apart."""

    DECOUPLED = "decoupled"
    """The optimizer shrinks the weight itself, outside the gradient: ``v -= lr * wd * v``
    (Keras ``weight_decay``, Muon's ``adam_weight_decay``, transformers' ``AdamWeightDecay``)."""
    COUPLED = "coupled"
    """A penalty whose gradient goes through the optimizer's update: weight regularizers,
    and penalties inside an optimizer's own update rule (Ftrl's l2 strengths)."""
    L1 = "l1"
    """An L1 penalty (Ftrl ``l1_regularization_strength``, ``keras.regularizers.L1``, the L1 part of
    ``L1L2``): it pushes weights to exactly zero by a constant amount, sparsity rather than a shrink in
    proportion to the weight, so it gets its own twin and is reported apart from decay."""


@dataclass(frozen=True)
class DecaySource:
    """One knob that can decay weights, as configured in the set-up."""

    kind: SourceKind
    owner: str
    """Who holds the knob: an optimizer label (``"AdamW"``, ``"optimizers[1] Adam"``) or ``"model"``."""
    knob: str
    """The knob's own name: ``weight_decay``, ``adam_weight_decay``, ``l2_regularization_strength``,
    ``kernel_regularizer`` (with the variable in ``variables``)."""
    value: float
    """The configured strength (weight_decay, l2, ...), as the user wrote it."""
    variables: tuple[str, ...] | None = None
    """Paths the source can reach when the backend knows them (a regularizer: its variable);
    None = whatever its owner updates."""
    optimizer: Any = field(default=None, compare=False, repr=False)
    """The owning optimizer object (decoupled sources): its learning rate makes the per-step rate."""
    handle: Any = field(default=None, compare=False, repr=False)
    """The backend's private handle to set this knob's runtime scale."""

    @property
    def label(self) -> str:
        """``AdamW weight_decay=0.01``; ``model regularizer L2(l2=0.001) on dense1/kernel``."""
        where = f" on {self.variables[0]}" if self.variables and len(self.variables) == 1 else ""
        value = "" if "(" in self.knob else f"={self.value:g}"
        return f"{self.owner} {self.knob}{value}{where}"


@dataclass(frozen=True)
class Trainable:
    """One variable the set-up trains, as the probe measures it."""

    path: str
    """Stable path for the report (``dense1/kernel``; Keras 3 ``variable.path``, tf_keras name without ``:0``)."""
    variable: Any
    """The framework's variable object, handed back to :meth:`ProbeBackend.read`."""


Step = Callable[[Any, Any], None]
"""A compiled step: ``step(x, y)`` applies one update to the live variables."""


class ProbeBackend(abc.ABC):
    """One training framework, as the twin-step probe sees it.

    The probe (``decay_audit.probe.twin.run_probe``) calls, in this order:
    :meth:`accepts` (through ``BACKENDS``), :meth:`device`, :meth:`update_every`; then
    inside :meth:`scope`, :meth:`determinism` and :meth:`switchable` (which installs the
    runtime knobs and yields the :class:`DecaySource` list): :meth:`build`,
    :meth:`trainable`, :meth:`make_step`, :meth:`make_reference_step`,
    :meth:`state_variables`, :meth:`read`. If :meth:`built` is false it runs one warm-up
    step and asks :meth:`state_variables` again. Per probe step: :meth:`learning_rate`
    of each decoupled source's optimizer, :meth:`ema_overwrite`, :meth:`penalty_gradients`,
    :meth:`snapshot` of the state, :meth:`current` of the trainables; the real step and
    :meth:`current` of its trainables; then for each twin :meth:`restore`, :meth:`set_scale`
    on the twin's sources, the compiled step, :meth:`set_scale` back to 1, :meth:`current`
    of the trainables (reduced variable by variable against the real step at once); last,
    :meth:`restore` and the real step again (the repeat that calibrates the noise floor), so
    the probe goes on from a real step's state. The state before the probe waits on disk
    (one snapshot in memory at a time); at the end :meth:`write` puts it back and
    :meth:`notes` go to the report.
    Methods not marked abstract have defaults that fit most frameworks.

    A decoupled source's effect is taken as linear in its scale (``v -= lr*wd*v``
    before the update); where a framework's decay is not (an optimizer that decays
    inside its update rule), list it as COUPLED: it is then measured on/off only.
    """

    name: str = ""
    """What ``verify`` reports it ran on: ``tensorflow``, ``jax``, ``torch``, ``tf_keras``."""

    @abc.abstractmethod
    def accepts(self, setup: Any) -> bool:
        """True when this backend can run ``setup`` (its model's framework and the active
        Keras backend). ``BACKENDS`` asks each in order; the first that accepts runs it."""

    @abc.abstractmethod
    def optimizers(self, setup: Any) -> list[Any]:
        """Every optimizer object that updates variables in this set-up, unwrapped
        (LossScaleOptimizer's inner one, MultiOptimizer's sub-optimizers, each entry of
        ``setup.optimizers``): the decay knobs live on these."""

    @abc.abstractmethod
    def switchable(self, setup: Any) -> contextlib.AbstractContextManager[list[DecaySource]]:
        """Install a runtime knob for every decay source and yield the sources.

        Must list EVERY knob that decays weights: each optimizer's ``weight_decay`` and
        whatever else its class reads (Muon ``adam_weight_decay``; Ftrl
        ``l1/l2/l2_shrinkage_regularization_strength``; a subclass's own decay hook),
        and every weight regularizer. A knob the probe does not know stays on in the
        reference and its decay is silently attributed to nothing.
        The knobs must be read by the compiled step at run time (see the module
        docstring, point 2), and everything restored exactly on exit."""

    @abc.abstractmethod
    def set_scale(self, source: DecaySource, scale: float) -> None:
        """Run the source at ``scale`` x its configured strength from the next step on
        (0 = off, 1 = as configured); no recompilation."""

    @abc.abstractmethod
    def learning_rate(self, optimizer: Any) -> float:
        """The learning rate the optimizer's NEXT update uses (schedules evaluated at its
        current iteration): decoupled decay per step is ``learning_rate * value``."""

    @abc.abstractmethod
    def build(self, setup: Any) -> None:
        """Create every optimizer slot before the first snapshot, so no state appears
        between twins. A set-up whose optimizers only build inside its own step may be
        left unbuilt: the probe then runs one warm-up step first."""

    @abc.abstractmethod
    def built(self, setup: Any) -> bool:
        """Whether every optimizer of the set-up has created its state."""

    @abc.abstractmethod
    def state_variables(self, setup: Any) -> list[Any]:
        """Everything a step reads or writes: all model variables (``model.variables``,
        not ``weights``: seeds, BatchNorm statistics), every optimizer's variables
        (iterations, slots, loss scale, EMA, accumulators), metric state."""

    @abc.abstractmethod
    def trainable(self, setup: Any) -> list[Trainable]:
        """The variables the report judges, in the model's order."""

    @abc.abstractmethod
    def read(self, variables: Sequence[Any]) -> list[np.ndarray]:
        """Copies of the values (host numpy arrays, their own dtype)."""

    @abc.abstractmethod
    def write(self, variables: Sequence[Any], values: Sequence[np.ndarray]) -> None:
        """Put values back exactly (bit for bit)."""

    def snapshot(self, variables: Sequence[Any]) -> Any:
        """A copy of the values that :meth:`restore` can put back; may stay on the device
        (the probe takes one per step and restores it once per twin, so this is the hot path)."""
        return self.read(variables)

    def restore(self, variables: Sequence[Any], snapshot: Any) -> None:
        """Put a :meth:`snapshot` back exactly."""
        self.write(variables, snapshot)

    def current(self, variables: Sequence[Any]) -> Sequence[Any]:
        """The values now, each turned into a host array by ``np.asarray`` only when the probe reads
        it. A backend whose values already live on the host may return them without copying (the
        TensorFlow backend returns tensors): the probe reads a twin variable by variable, so a
        whole copy of the trainables per twin is never needed. Default: :meth:`read`."""
        return self.read(variables)

    def ema_overwrite(self, setup: Any) -> bool:
        """Whether the NEXT step replaces the weights by their moving average (Keras' ``use_ema`` with
        ``ema_overwrite_frequency``): on such a step the decay seen is the average's share, not the
        configured rate. Default: False."""
        return False

    @abc.abstractmethod
    def make_step(self, setup: Any) -> Step:
        """The set-up's own step, compiled ONCE the way its training compiles it (Keras'
        ``train_step`` as ``fit`` runs it, or the user's hand-written step), reading the
        knobs installed by :meth:`switchable` at run time."""

    def make_reference_step(self, setup: Any) -> Step | None:
        """For a hand-written step: the same update with the data loss alone
        (``setup.data_loss``), to expose penalties written into the step's own code,
        which no knob can switch. None when there is no data loss to use."""
        return None

    def penalty_gradients(self, setup: Any, sources: Sequence[DecaySource]) -> dict[str, np.ndarray]:
        """The gradient of each weight regularizer alone, by variable path, at the current
        weights: the coupled decay as the penalty defines it (``2 * l2 * w`` for Keras'
        L2), before the optimizer transforms it: an adaptive optimizer rescales the gradient, so
        only the penalty's own gradient shows the configured coupled strength."""
        return {}

    def update_every(self, setup: Any) -> int:
        """How many steps one optimizer update takes (gradient accumulation): decay happens only
        on updating steps, so the probe runs at least twice this many steps."""
        return 1

    def device(self, requested: str | None) -> str:
        """The device the probe runs on, in words (``CPU``, ``GPU``); ``requested`` is
        ``cpu``/``gpu``/None (None = the framework's default)."""
        return "CPU"

    def placement(self, setup: Any) -> str | None:
        """Where a distribution strategy or distribution runs the step, in words for the report's
        header (``2 replicas (MirroredStrategy on CPU:0, CPU:1)``); None: one device, :meth:`device`."""
        return None

    def refuse(self, setup: Any) -> str | None:
        """Why the set-up cannot be probed in this one process (a multi-worker strategy), naming what
        to run instead; None when it can."""
        return None

    def replica_disagreements(self) -> dict[str, float]:
        """Variable path -> the largest difference seen between two replicas of it during the probe:
        every replica applies the same update, so a difference is a finding of its own."""
        return {}

    def scope(self, setup: Any, device: str) -> contextlib.AbstractContextManager[None]:
        """Where steps run: the device, and a distribution strategy's scope."""
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def determinism(self) -> Iterator[None]:
        """Make kernels bit-reproducible for the probe where the framework can (GPU)."""
        yield

    def notes(self, setup: Any) -> list[str]:
        """Anything the report should say about how this set-up was probed."""
        return []
