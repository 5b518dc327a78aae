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


class KerasBackend(TextEnum):
    """The Keras 3 backends: the one list the CLI's choices, the rule targets and the probe share.

    They matter to decay because Keras 3 matches ``exclude_from_weight_decay(var_names=...)``
    against ``path:0`` on TensorFlow but against the leaf name everywhere else."""

    TENSORFLOW = "tensorflow"
    JAX = "jax"
    TORCH = "torch"
    NUMPY = "numpy"
    """Inference only: rules can be checked against it, but nothing trains on it, so verify refuses it."""

    @property
    def trains(self) -> bool:
        """Whether a training step can run on this backend (verify's ``--backend`` choices)."""
        return self is not KerasBackend.NUMPY


class TargetName(TextEnum):
    """The training tools whose rule language decay-audit writes and checks (``rules --target``).

    Kept here with the other vocabularies, not in ``rules``: the CLI builds its choices from it at
    start-up, and importing ``rules`` (its targets and the report records) there cost a scan 30 ms."""

    NATIVE = "native"
    KERAS = "keras"
    TF_KERAS = "tf-keras"
    MODEL_GARDEN = "model-garden"
    OPTAX = "optax"


class Preset(TextEnum):
    """Named decay policies, each the convention of a well-known code base."""

    KERNELS_ONLY = "kernels-only"
    """Decay kernels only: minGPT ``configure_optimizers`` (whitelist Linear/Conv weights). The default."""
    NO_BIAS_NORM = "no-bias-norm"
    """Decay all but biases and norms: Google BERT ``exclude_from_weight_decay=["LayerNorm", "layer_norm",
    "bias"]``, TF Model Garden, Hugging Face Trainer ``no_decay = ["bias", "LayerNorm.weight"]``."""
    NDIM = "ndim"
    """Decay iff ndim >= 2: timm ``param_groups_weight_decay`` and nanoGPT (``p.dim() >= 2``)."""
    DECAY_ALL = "decay-all"
    """Decay every trainable variable: what a plain Keras optimizer with ``weight_decay`` does."""
