"""The vocabularies shared by the CLI, the library and every output format."""

from __future__ import annotations

import enum


class TextEnum(str, enum.Enum):
    """A str Enum that prints as its value: one vocabulary for CLI strings, JSON and the API."""

    def __str__(self) -> str:
        return self.value


class Kind(TextEnum):
    """What a variable is, as far as weight decay is concerned."""

    KERNEL = "kernel"
    """A weight matrix or filter that multiplies activations (Dense, Conv, RNN kernels)."""
    BIAS = "bias"
    """An additive offset, whatever its rank (MultiHeadAttention's biases are 2-D)."""
    NORM = "norm"
    """A normalization layer's gain or offset (gamma/beta/scale)."""
    EMBEDDING = "embedding"
    """A lookup table indexed by ids (token, position, segment embeddings)."""
    SCALE = "scale"
    """A multiplicative or activation parameter: layer-scale gains, PReLU slopes, attention scales."""
    STATISTIC = "statistic"
    """State the optimizer never updates: moving averages, counters, seeds."""
    OTHER = "other"
    """Nothing known says what it is."""


class Confidence(TextEnum):
    HIGH = "high"
    """The owning layer is a known class and the variable's role in it is known."""
    MEDIUM = "medium"
    """Strong conventions (leaf name, graph use, class name) agree, but the class itself is not known."""
    LOW = "low"
    """Only shape or position speaks for the verdict."""
