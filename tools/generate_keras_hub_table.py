"""Generate ``decay_audit/knowledge/_generated/keras_hub_layers.py`` from the installed keras_hub.

    python tools/generate_keras_hub_table.py [--check]

Reads the SOURCE of every keras_hub layer class (``ast``, nothing is built or run) and
records, per class, what ``keras.saving.load_model`` needs to name the class's variables:

- its own variables in creation order (``self.add_weight(name=...)`` calls, following
  ``self.method()`` and ``super().method()`` calls from ``__init__`` and ``build``), whether
  each is trainable and whether a condition or loop guards it;
- its sublayers: the attribute each is saved under in ``model.weights.h5`` (Keras saves a
  layer's children under their attribute names, keras/src/saving/saving_lib.py
  ``_walk_saveable``), the classes that attribute may hold, and constant keyword
  arguments of the constructor call (``center=False``), which fix optional variables;
- whether the class opens a name scope for its sublayers' variables (Functional
  subclasses such as every ``Backbone`` and ``Task`` do not: their layers are built while
  the model is constructed, outside any scope);
- the keras base class a keras_hub class extends (``CachedMultiHeadAttention`` is a
  ``MultiHeadAttention``), whose variables decay-audit already knows.
- the order its source first assigns layers to its attributes (``__init__``, then ``build``;
  for a Functional model, up to its ``super().__init__(inputs, outputs)``): Keras tracks
  sublayers in that order, so it is the order of ``model.weights``, which the h5 keys (sorted by
  name) and a Functional's saved layer list (graph order) do not keep.

The role (kind) of every own variable comes from ``REVIEWED_KINDS`` in
``keras_hub_table/reviewed.py``, which a person reviewed against the layer's ``call``; a
variable that no entry covers stops the script, so a new keras_hub version cannot slip an
unreviewed variable into the table. The source reader is ``keras_hub_table/source.py``, the
renderer ``keras_hub_table/render.py``. ``tests/test_keras_hub_layers.py`` reruns this against
the installed keras_hub and compares.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

_TOOLS = Path(__file__).resolve().parent
if str(_TOOLS) not in sys.path:
    sys.path.insert(0, str(_TOOLS))  # the helper package beside this script, also when a test loads it by path

from keras_hub_table.render import render, render_roles  # noqa: E402
from keras_hub_table.reviewed import MISSING  # noqa: E402
from keras_hub_table.reviewed import reviewed_kind as _reviewed_kind  # noqa: E402
from keras_hub_table.source import KerasHubSource  # noqa: E402

__all__ = ["OUT", "ROLES_OUT", "MISSING", "build_table", "render", "render_roles", "main"]

OUT = _TOOLS.parent / "decay_audit" / "knowledge" / "_generated" / "keras_hub_layers.py"
ROLES_OUT = OUT.with_name("keras_hub_roles.py")


def build_table() -> dict:
    import keras
    import keras_hub

    from decay_audit.knowledge.keras import LAYER_VARIABLES, SUBLAYER_ATTRIBUTES

    keras_known = set(LAYER_VARIABLES) | set(SUBLAYER_ATTRIBUTES)
    source = KerasHubSource()
    table = {}
    for key, cls in sorted(source.classes.items()):
        reader = source.read(cls)
        keras_base = next(
            (
                b.__name__
                for b in cls.__mro__[1:]
                if not b.__module__.startswith("keras_hub") and b.__name__ in keras_known
            ),
            None,
        )
        is_model = issubclass(cls, keras.Model)
        serialized = reader.serialized_layers() if is_model else set()
        functional = is_model and reader.functional
        variables = []
        for leaf, trainable, optional, attr, in_init, rank in reader.variables:
            if leaf is None:
                # Keras names it ``variable``, ``variable_1``, ... by a process-wide counter.
                kind, role = _reviewed_kind(cls.__name__, f"attribute:{attr}", trainable)
                variables.append(
                    ("", trainable, optional, kind, role + " (unnamed: Keras numbers it variable_N)", in_init, rank)
                )
                continue
            kind, role = _reviewed_kind(cls.__name__, leaf, trainable)
            variables.append((leaf, trainable, optional, kind, role, in_init, rank))
        registered = keras.saving.get_registered_name(cls)
        table[key] = {
            "name": cls.__name__,
            "registered": registered if registered.startswith("keras_hub>") else None,
            "scopes": not functional,
            "model": is_model,
            "keras_base": keras_base,
            "variables": tuple(variables),
            "sublayers": {k: tuple(v) for k, v in sorted(reader.sublayers.items())},
            "lists": {k: tuple(v) for k, v in sorted(reader.lists.items()) if v},
            "constants": {k: v for k, v in sorted(reader.constants.items()) if v},
            "built_in_init": tuple(sorted(reader.built_outside_scope)),
            "created_in_init": tuple(sorted(reader.created_in_init)),
            "prefixes": reader.prefixes,
            "tracking": tuple(
                (attr, None if pattern == re.escape(attr.lstrip("_")) else pattern)
                for attr, pattern in reader.tracking.items()
                if attr in reader.sublayers
                or attr in reader.lists
                or (is_model and attr in reader.from_parameters and attr in serialized)
            ),
        }
    if MISSING:
        raise SystemExit(
            "no reviewed kind (read each layer's call() and add a REVIEWED_KINDS entry): " + ", ".join(MISSING)
        )
    return {"version": keras_hub.__version__, "classes": table}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed table differs")
    args = parser.parse_args()
    table = build_table()
    text, roles = render(table), render_roles(table)
    if args.check:
        return 0 if OUT.read_text() == text and ROLES_OUT.read_text() == roles else 1
    OUT.write_text(text)
    ROLES_OUT.write_text(roles)
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(_TOOLS.parent))
    raise SystemExit(main())
