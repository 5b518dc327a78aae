"""The inventory: every variable of a model exactly once, whatever format it came from.

Every loader returns an :class:`Inventory`; nothing after this stage knows which
file format was read. Records carry what the file said, not conclusions: the
classifier draws those, with the evidence, in the next stage.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class VariableRecord:
    """One model variable, as faithfully as the source could tell."""

    path: str
    """Keras 3 ``variable.path`` where the model's classes are known; otherwise the most
    faithful path the file gives (a SavedModel variable name without ``:0``)."""
    leaf: str
    """The last path component: ``variable.name`` in Keras 3 (``kernel``, ``gamma``, ``variable_3``)."""
    layer: str | None
    """Name of the layer that owns the variable, when known."""
    layer_class: str | None
    """Class name of the owning layer (``Dense``, ``LayerScale``), when known."""
    shape: tuple[int | None, ...]
    """Declared shape; None for a dimension the source leaves open."""
    dtype: str
    """Variable dtype as a NumPy-style name (``float32``)."""
    trainable: bool
    """Whether an optimizer would update it. Where the source does not record it
    (``trainable_known`` False) this is what Keras gives the variable unless the user's code
    freezes its layer: True, except for variables a class always creates non-trainable."""
    origin: str
    """Where in the source the variable was read (h5 dataset path, object-graph node, attribute)."""
    leaf_known: bool = True
    """False when the leaf is a position (``vars/2``) because the layer's variable order is unknown."""
    parent_classes: tuple[str, ...] = ()
    """Classes of the layers enclosing the owner, outermost first (``MultiHeadAttention`` for ``query``)."""
    layer_builtin: bool = False
    """True when ``layer_class`` is Keras' own class (from the ``keras`` package), not a user class of the same name."""
    graph_uses: tuple[str, ...] = ()
    """How a saved computation graph consumes the variable, e.g. ``MatMul:1`` (op and input position)."""
    class_hint: str | None = None
    """A class guessed from naming conventions when no config says it
    (``batch_normalization_2`` → BatchNormalization)."""
    naming: str | None = None
    """Library whose naming the path follows when no layer class is recorded (``transformers`` for a
    Hugging Face ``tf_model.h5``), so the classifier can consult that library's table
    (decay_audit.knowledge.transformers)."""
    naming_evidence: str | None = None
    """What identified that library (``config.json model_type 'bert', TFBertModel``), quoted in evidence."""
    trainable_known: bool = True
    """False where the source cannot know whether the variable is trained: a weights-only file
    (``.weights.h5``, sharded weights without a config, legacy ``save_weights``) stores values, not
    which layers the code that loads them freezes. Reports say "unknown" and the policy decides as
    if trainable, saying so in the decision's reason."""

    @property
    def size(self) -> int:
        """Number of elements; 0 when a dimension is unknown."""
        if None in self.shape:  # not any(...) over a generator: summaries ask it 4 times a variable
            return 0
        return math.prod(self.shape)  # type: ignore[arg-type]

    @property
    def ndim(self) -> int:
        return len(self.shape)


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer a saved file's compile config would recreate on load."""

    class_name: str
    weight_decay: float | None
    learning_rate: Any
    config: Any = field(compare=False, repr=False, default=None)


@dataclass(frozen=True)
class Inventory:
    """All variables of one model, plus what the loader learned on the way."""

    source: str
    """The path (or ``<live keras.Model 'name'>``) the inventory was read from."""
    loader: str
    """Which loader read it (a :class:`decay_audit.loaders.LoaderName` value)."""
    records: tuple[VariableRecord, ...]
    notes: tuple[str, ...] = ()
    """Things the user should know about the source itself (no config found, classes not importable)."""
    model_name: str | None = None
    optimizer: OptimizerConfig | None = None
    """The compile config's optimizer, when the file holds one."""

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[VariableRecord]:
        return iter(self.records)
