"""What decay-audit knows about library layer classes, read from tables instead of importing the libraries.

Model files name a variable's layer class but not the variable's role; these tables supply the
role without importing Keras, keras_hub or transformers (a scan must not run code from the file
or pay for a framework import). ``keras`` holds Keras' own classes, ``keras_hub`` the generated
keras_hub table (which builds on ``keras``), ``transformers`` Hugging Face's TF variable names.
"""

from __future__ import annotations

from decay_audit.knowledge.keras import LAYER_VARIABLES, VariableSlot
from decay_audit.knowledge.keras_hub import slot_for_hub_leaf

__all__ = ["slot_for_leaf"]


def slot_for_leaf(class_name: str, leaf: str) -> VariableSlot | None:
    """The role of ``leaf`` in ``class_name``: Keras' own classes, then keras_hub's.

    A class name Keras knows is answered by Keras alone, so a keras_hub class that shares the
    name (keras_hub has its own ``RMSNormalization``) never lends it a role.
    """
    for slot in LAYER_VARIABLES.get(class_name, ()):
        if slot.leaf == leaf:
            return slot
    if class_name in LAYER_VARIABLES:
        return None
    return slot_for_hub_leaf(class_name, leaf)
