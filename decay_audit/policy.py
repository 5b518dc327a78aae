"""Turn classifications into decisions: decay or not, and why.

The default is minGPT's convention (Karpathy, minGPT ``configure_optimizers``):
decay kernels (weights that multiply activations) and nothing else. Non-trainable
variables are never decayed: the optimizer does not update them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from decay_audit.classify import Classification
from decay_audit.inventory import VariableRecord
from decay_audit.kinds import Kind


class Preset(str, enum.Enum):
    """Named decay policies, each the convention of a well-known code base."""

    KERNELS_ONLY = "kernels-only"
    """Decay kernels only (minGPT). The default."""

    def __str__(self) -> str:
        return self.value


DECAYED_KINDS: dict[Preset, frozenset[Kind]] = {
    Preset.KERNELS_ONLY: frozenset({Kind.KERNEL}),
}


@dataclass(frozen=True)
class Decision:
    """Whether a variable should receive weight decay under a policy."""

    decay: bool
    reason: str


def decide(record: VariableRecord, classification: Classification,
           preset: Preset = Preset.KERNELS_ONLY) -> Decision:
    if not record.trainable:
        return Decision(False, "not trainable: the optimizer never updates it")
    if classification.kind in DECAYED_KINDS[preset]:
        return Decision(True, f"{classification.kind.value} under {preset.value}")
    return Decision(False, f"{classification.kind.value} is excluded under {preset.value}")
