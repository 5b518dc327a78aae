"""Generate ``decay_audit/keras_hub_layers.py`` from the installed keras_hub.

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

The role (kind) of every own variable comes from ``REVIEWED_KINDS`` below, which a person
reviewed against the layer's ``call``; a variable that no entry covers stops the script, so
a new keras_hub version cannot slip an unreviewed variable into the table.
``tests/test_keras_hub_layers.py`` reruns this against the installed keras_hub and compares.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
import pkgutil
import re
import sys
import textwrap
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "decay_audit" / "keras_hub_layers.py"
ROLES_OUT = OUT.with_name("keras_hub_roles.py")

# (class-name regex, leaf regex) -> (kind, role). First match wins. Reviewed against each layer's call().
REVIEWED_KINDS: tuple[tuple[str, str, str, str], ...] = (
    # Normalization gains and offsets.
    (r"Norm|LayerNorm|RMS", r"^(scale|weight|gamma)$", "norm", "normalization gain"),
    (r"Norm|LayerNorm|RMS", r"^(bias|beta|offset)$", "norm", "normalization offset"),
    (r"Norm", r"^(std_scale)$", "norm", "normalization gain"),
    (r"Norm", r"^(std_bias)$", "norm", "normalization offset"),
    # Layer scale: a per-channel gain on a residual branch (CaiT/ConvNeXt style).
    (r"LayerScale|Scale", r"^(gamma|lambda1|scale|layer_scalar)$", "scale", "layer-scale gain on a residual branch"),
    (r".", r"^(layer_scalar|lambda1|per_dim_scale|per_expert_scale|correct_output_scale|num_points_scale|reg_scale)$",
     "scale", "learned multiplicative gain"),
    (r"Affine", r"^scale$", "scale", "learned affine gain applied elementwise to activations"),
    (r".", r"^sinks$", "bias", "per-head attention-sink logit appended to the attention scores"),
    (r".", r"^logit_scale$", "scale", "learned logit temperature (CLIP/SigLIP)"),
    (r".", r"^logit_bias$", "bias", "learned logit offset (SigLIP)"),
    (r".", r"^attribute:probe$", "embedding", "learned query token of attention pooling (the probe)"),
    (r"^T5MultiHeadAttention$", r"^embeddings$", "embedding",
     "T5 relative_attention_bias: one row per relative-distance bucket, looked up by bucket index"),
    # Relative-position and attention-bias tables: indexed by a relative distance, i.e. lookup tables.
    (r".", r"^relative_attention_bias$", "embedding",
     "T5 relative-position bias table, one row per relative-distance bucket, looked up by bucket index"),
    (r".", r"^relative_position_bias_table$", "embedding",
     "Swin relative-position bias table, looked up by relative-position index"),
    (r".", r"^(rel_embedding|rel_embeddings|rel_pos_h|rel_pos_w)$", "embedding",
     "relative-position table, looked up by relative distance"),
    # XLNet: per-head biases added to the query before scoring (Transformer-XL r_w_bias/r_r_bias/r_s_bias).
    (r".", r"^(content_attention_bias|positional_attention_bias|segment_attention_bias)$", "bias",
     "per-head bias added to the query before attention scoring (Transformer-XL r_w/r_r/r_s bias)"),
    (r".", r"^segment_encoding$", "embedding", "per-segment-relation table selected by segment ids (XLNet seg_embed)"),
    # Learned tokens and tables that are added to or looked up by the input.
    (r".", r"^(embeddings|position_embeddings|position_embedding_table|tiled_position_embeddings|"
           r"interpolated_position_embeddings|pos_embed|position_embedding|pos_query_embeddings|class_embedding|"
           r"positional_encoding_gaussian_matrix)$", "embedding", "learned position or token table added to the input"),
    (r".", r"^(class_token|cls_token|mask_token|mask_emb|register_tokens|query_tokens|"
           r"pooling_attention_query|distillation_token)$", "embedding",
     "learned token concatenated to (or substituted into) the input sequence"),
    # Weight matrices.
    (r".", r"^(kernel|output_kernel|conv1d_kernel|gate_proj|up_proj|down_proj|gate_up_proj|"
           r"expert_feedforward_[a-z_]+|w\d|v\d|a\d|g\d|x_[a-z]|k_[a-z]|r_k|pos_proj|"
           r"[a-z_]*_kernel)$", "kernel", "weight matrix that multiplies the layer input"),
    # Biases.
    (r".", r"^(bias|output_bias|dt_bias|[a-z_]*_bias)$", "bias", "bias added to the layer output"),
    (r".", r"^(A_log|time_mix_[a-z]|token_ordering)$", "scale",
     "per-channel decay/mixing coefficient of a recurrent state update"),
)

NON_TRAINABLE_ROLE = ("statistic", "state the optimizer never updates")


def _reviewed_kind(class_name: str, leaf: str, trainable: bool) -> tuple[str, str]:
    if not trainable:
        return NON_TRAINABLE_ROLE
    for class_pattern, leaf_pattern, kind, role in REVIEWED_KINDS:
        if re.search(class_pattern, class_name) and re.search(leaf_pattern, leaf):
            return kind, role
    MISSING.append(f"{class_name}.{leaf}")
    return "other", "unreviewed"


MISSING: list[str] = []


# -- discovery ------------------------------------------------------------------------------

def _layer_classes():
    import keras
    import keras_hub  # noqa: F401

    classes = {}
    for module_info in pkgutil.walk_packages(keras_hub.src.__path__, "keras_hub.src."):
        if module_info.name.endswith("_test") or ".tests" in module_info.name:
            continue
        try:
            module = importlib.import_module(module_info.name)
        except Exception:  # noqa: BLE001 - optional dependencies of some modules
            continue
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and issubclass(obj, keras.layers.Layer):
                classes[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return classes


def class_id(cls) -> str:
    """How the table names a class: keras' own by class name, keras_hub's by module path."""
    if cls.__module__.startswith("keras_hub"):
        return f"{cls.__module__}.{cls.__qualname__}"
    return cls.__name__


# -- source reading -------------------------------------------------------------------------

def _bindings(classes) -> dict[str, dict[str, list]]:
    """Layer classes passed as constructor arguments anywhere in keras_hub:
    ``SwinTransformerStage(downsample=PatchMerging if ... else None)`` -> {stage: {downsample: [PatchMerging]}}."""
    import keras

    found: dict[str, dict[str, list]] = {}
    for cls in classes.values():
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        except (OSError, TypeError, SyntaxError):
            continue
        module = sys.modules[cls.__module__]
        for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
            target = _resolve(call.func, module)
            if not (inspect.isclass(target) and issubclass(target, keras.layers.Layer)):
                continue
            for keyword in call.keywords:
                values = [keyword.value.body, keyword.value.orelse] if isinstance(keyword.value, ast.IfExp) \
                    else [keyword.value]
                for value in values:
                    resolved = _resolve(value, module) if isinstance(value, (ast.Name, ast.Attribute)) else None
                    if inspect.isclass(resolved) and issubclass(resolved, keras.layers.Layer):
                        bound = found.setdefault(class_id(target), {}).setdefault(keyword.arg, [])
                        if resolved not in bound:
                            bound.append(resolved)
    return found


BINDINGS: dict[str, dict[str, list]] = {}


class _ClassReader:
    def __init__(self, cls, keras_known: set[str]):
        self.cls = cls
        self.keras_known = keras_known
        self.variables: list[tuple] = []  # (leaf, trainable, condition, attribute, created in __init__)
        self.sublayers: dict[str, list[str]] = {}
        self.lists: dict[str, list[str]] = {}
        self.constants: dict[str, dict] = {}
        self.built_outside_scope: set[str] = set()
        self.functional = False
        self.locals: dict[str, str] = {}
        self.created_in_init: set[str] = set()
        self.prefixes = False
        self.prefix_from_name = False
        self.root = "__init__"
        self.defaults: dict[str, list] = {}
        self.aliases: dict[str, str] = {}

    def _method(self, owner, name):
        for klass in owner.__mro__:
            if not klass.__module__.startswith("keras_hub"):
                return None, None
            if name in klass.__dict__:
                function = klass.__dict__[name]
                try:
                    source = textwrap.dedent(inspect.getsource(function))
                except (OSError, TypeError):
                    return None, None
                tree = ast.parse(source).body[0]
                return klass, tree
        return None, None

    def read(self):
        init = self._method(self.cls, "__init__")[1]
        if init is not None:
            # Constructor parameters whose default is a layer class (Swin's ``norm_layer``).
            arguments = init.args.args[-len(init.args.defaults):] if init.args.defaults else []
            module = sys.modules[self.cls.__module__]
            for argument, default in zip(arguments, init.args.defaults):
                resolved = _resolve(default, module)
                if resolved is not None:
                    self.defaults[argument.arg] = [resolved]
            for argument, bound in BINDINGS.get(class_id(self.cls), {}).items():
                self.defaults.setdefault(argument, [])
                self.defaults[argument] += [b for b in bound if b not in self.defaults[argument]]
        for name in ("__init__", "build"):
            self.root = name
            self._run(self.cls, name, guarded="", depth=0, stack=())

    def _run(self, owner, name, guarded, depth, stack):
        klass, tree = self._method(owner, name)
        if tree is None or depth > 6 or (klass, name) in stack:
            return
        module = sys.modules[klass.__module__]
        self._body(tree.body, klass, module, guarded, depth, stack + ((klass, name),), name)

    def _body(self, statements, klass, module, guarded, depth, stack, method):
        for statement in statements:
            self._statement(statement, klass, module, guarded, depth, stack, method)

    def _statement(self, node, klass, module, guarded, depth, stack, method):
        if isinstance(node, ast.If):
            # ``guarded`` is the condition text under which the code runs ("?" when not expressible).
            test = ast.unparse(node.test)
            body = f"({guarded}) and ({test})" if guarded and guarded != "?" else ("?" if guarded else test)
            orelse = f"({guarded}) and not ({test})" if guarded and guarded != "?" else (
                "?" if guarded else f"not ({test})")
            self._body(node.body, klass, module, body, depth, stack, method)
            self._body(node.orelse, klass, module, orelse, depth, stack, method)
            return
        if isinstance(node, (ast.For, ast.While, ast.With, ast.Try)):
            inner_guarded = "?" if isinstance(node, (ast.For, ast.While, ast.Try)) else guarded
            for field in ("body", "orelse", "finalbody"):
                self._body(getattr(node, field, []) or [], klass, module, inner_guarded, depth, stack, method)
            for handler in getattr(node, "handlers", []) or []:
                self._body(handler.body, klass, module, True, depth, stack, method)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Return)):
            if isinstance(node, ast.Return) and node.value is not None:
                self._expression(node.value, klass, module, guarded, depth, stack, method, target=None)
            return
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self._expression(node.value, klass, module, guarded, depth, stack, method, target=target)
            return
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            self._expression(node.value, klass, module, guarded, depth, stack, method, target=node.target)
            return
        if isinstance(node, ast.Expr):
            self._expression(node.value, klass, module, guarded, depth, stack, method, target=None)

    def _expression(self, value, klass, module, guarded, depth, stack, method, target):
        attr = target.attr if isinstance(target, ast.Attribute) and _is_self(target.value) else None
        local = target.id if isinstance(target, ast.Name) else None
        if local == "prefix" and any(isinstance(n, ast.Name) and n.id == "name" for n in ast.walk(value)):
            self.prefix_from_name = True  # ``prefix = str(name) + "_" if name is not None else ""``
        # Calls nested anywhere in the expression, in source order.
        for call in _calls_in_order(value):
            self._call(call, klass, module, guarded, depth, stack, method, attr if call is value else None)
        if attr and isinstance(value, ast.Name) and value.id in self.defaults:
            self.aliases[attr] = value.id  # ``self.norm_layer = norm_layer``
        layer_class = self._layer_class_of(value, module)
        if layer_class and attr and self._alternatives(value):
            for alternative in self._alternatives(value)[1:]:
                self.sublayers.setdefault(attr, [])
                if alternative not in self.sublayers[attr]:
                    self.sublayers[attr].append(alternative)
        if (layer_class and attr) or (attr and isinstance(value, (ast.List, ast.ListComp, ast.Tuple))):
            if self.root == "__init__":
                self.created_in_init.add(attr)
        if layer_class and attr:
            self.sublayers.setdefault(attr, [])
            if layer_class not in self.sublayers[attr]:
                self.sublayers[attr].append(layer_class)
            self._record_constants(attr, value)
        elif layer_class and local:
            self.locals[local] = layer_class
        elif isinstance(value, ast.Name) and attr and value.id in self.locals:
            self.sublayers.setdefault(attr, []).append(self.locals[value.id])
        elif attr and isinstance(value, (ast.List, ast.ListComp, ast.Tuple)):
            elements = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value.elt]
            members = self.lists.setdefault(attr, [])
            for element in elements:
                element_class = self._layer_class_of(element, module) or (
                    self.locals.get(element.id) if isinstance(element, ast.Name) else None)
                if element_class and element_class not in members:
                    members.append(element_class)
        elif attr and isinstance(value, ast.Call) and _is_self(getattr(value.func, "value", None)) is False:
            pass

    def _call(self, call, klass, module, guarded, depth, stack, method, attr=None):
        func = call.func
        for keyword in call.keywords:
            # ``name=f"{prefix}embedding"`` with ``prefix = str(name) + "_" if name ...`` (CLIP, SigLIP).
            if keyword.arg == "name" and isinstance(keyword.value, ast.JoinedStr) and keyword.value.values \
                    and isinstance(keyword.value.values[0], ast.FormattedValue) \
                    and isinstance(keyword.value.values[0].value, ast.Name) \
                    and keyword.value.values[0].value.id == "prefix" and self.root == "__init__" \
                    and self.prefix_from_name:
                self.prefixes = True
        if isinstance(func, ast.Attribute) and func.attr in ("add_weight", "add_variable") and _is_self(func.value):
            leaf = _constant_kwarg(call, "name")
            trainable = _constant_kwarg(call, "trainable", default=True)
            shape = next((k.value for k in call.keywords if k.arg == "shape"), call.args[0] if call.args else None)
            rank = len(shape.elts) if isinstance(shape, (ast.Tuple, ast.List)) else None
            self.variables.append((leaf if isinstance(leaf, str) else None,
                                   trainable is not False, guarded or None, attr, self.root == "__init__", rank))
            return
        if isinstance(func, ast.Attribute) and func.attr == "append" and isinstance(func.value, ast.Attribute) \
                and _is_self(func.value.value) and call.args:
            element = call.args[0]
            element_class = self._layer_class_of(element, module) or (
                self.locals.get(element.id) if isinstance(element, ast.Name) else None)
            if element_class:
                if self.root == "__init__":
                    self.created_in_init.add(func.value.attr)
                members = self.lists.setdefault(func.value.attr, [])
                if element_class not in members:
                    members.append(element_class)
            return
        if isinstance(func, ast.Attribute) and func.attr == "build" and isinstance(func.value, ast.Attribute) \
                and _is_self(func.value.value) and method == "__init__":
            self.built_outside_scope.add(func.value.attr)
            return
        if isinstance(func, ast.Attribute) and _is_self(func.value):
            self._run(self.cls, func.attr, guarded, depth + 1, stack)
            return
        if isinstance(func, ast.Attribute) and func.attr == "__init__" and isinstance(func.value, ast.Name) \
                and (len(call.args) >= 2 or any(k.arg == "inputs" for k in call.keywords)):
            self.functional = True  # ``Task.__init__(self, inputs=..., outputs=...)`` (ViTImageClassifier)
            return
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call) \
                and isinstance(func.value.func, ast.Name) and func.value.func.id == "super":
            if func.attr == "__init__" and (call.args or any(k.arg == "inputs" for k in call.keywords)):
                self.functional = True
            position = klass.__mro__.index(klass)
            for base in klass.__mro__[position + 1:]:
                if func.attr in base.__dict__:
                    if base.__module__.startswith("keras_hub"):
                        self._run(base, func.attr, guarded, depth + 1, stack)
                    break

    def _alternatives(self, value):
        """Classes a call may construct when it calls a constructor argument (Swin's ``norm_layer``)."""
        import keras

        if not isinstance(value, ast.Call):
            return []
        func = value.func
        parameter = func.id if isinstance(func, ast.Name) else (
            self.aliases.get(func.attr) if isinstance(func, ast.Attribute) and _is_self(func.value) else None)
        return [class_id(c) for c in self.defaults.get(parameter, ())
                if inspect.isclass(c) and issubclass(c, keras.layers.Layer)]

    def _layer_class_of(self, value, module):
        if not isinstance(value, ast.Call):
            return None
        resolved = _resolve(value.func, module)
        if resolved is None or not inspect.isclass(resolved):
            alternatives = self._alternatives(value)
            return alternatives[0] if alternatives else None
        import keras

        if inspect.isclass(resolved) and issubclass(resolved, keras.layers.Layer):
            return class_id(resolved)
        return None

    def _record_constants(self, attr, call):
        constants = {}
        for keyword in call.keywords:
            if keyword.arg and isinstance(keyword.value, ast.Constant) and \
                    isinstance(keyword.value.value, (bool, int, float, str, type(None))):
                constants[keyword.arg] = keyword.value.value
        if constants:
            previous = self.constants.get(attr)
            self.constants[attr] = constants if previous is None or previous == constants else {}


def _is_self(node) -> bool:
    return isinstance(node, ast.Name) and node.id == "self"


def _calls_in_order(node):
    calls = [n for n in ast.walk(node) if isinstance(n, ast.Call)]
    return sorted(calls, key=lambda n: (n.lineno, n.col_offset))


def _constant_kwarg(call, name, default=None):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value.value if isinstance(keyword.value, ast.Constant) else ...
    return default


def _resolve(func, module):
    parts = []
    while isinstance(func, ast.Attribute):
        parts.append(func.attr)
        func = func.value
    if not isinstance(func, ast.Name):
        return None
    parts.append(func.id)
    obj = getattr(module, parts[-1], None)
    for part in reversed(parts[:-1]):
        obj = getattr(obj, part, None)
    return obj


# -- table ----------------------------------------------------------------------------------

def build_table() -> dict:
    import keras
    import keras_hub

    from decay_audit.keras_layers import LAYER_VARIABLES, SUBLAYER_ATTRIBUTES

    keras_known = set(LAYER_VARIABLES) | set(SUBLAYER_ATTRIBUTES)
    classes = _layer_classes()
    BINDINGS.update(_bindings(classes))
    table = {}
    for key, cls in sorted(classes.items()):
        reader = _ClassReader(cls, keras_known)
        reader.read()
        keras_base = next((b.__name__ for b in cls.__mro__[1:] if not b.__module__.startswith("keras_hub")
                           and b.__name__ in keras_known), None)
        is_model = issubclass(cls, keras.Model)
        functional = is_model and (reader.functional or any(
            _ClassReader(b, keras_known).functional for b in ()))
        variables = []
        for leaf, trainable, optional, attr, in_init, rank in reader.variables:
            if leaf is None:
                # Keras names it ``variable``, ``variable_1``, ... by a process-wide counter.
                kind, role = _reviewed_kind(cls.__name__, f"attribute:{attr}", trainable)
                variables.append(("", trainable, optional, kind, role + " (unnamed: Keras numbers it variable_N)",
                                  in_init, rank))
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
        }
    if MISSING:
        raise SystemExit("no reviewed kind (read each layer's call() and add a REVIEWED_KINDS entry): "
                         + ", ".join(MISSING))
    return {"version": keras_hub.__version__, "classes": table}


HEADER = '''"""What decay-audit knows about keras_hub's layer classes: GENERATED, do not edit.

Generated by ``tools/generate_keras_hub_table.py`` from the source of keras_hub {version}
(no class is built or run). ``CLASSES`` maps ``module.ClassName`` to a tuple:

0. the class name;
1. the name ``config.json`` registers it under (``keras_hub>X``), or None;
2. whether its sublayers' variable paths start with its name (False for Functional
   subclasses such as Backbones and Tasks, whose layers are built at construction);
3. the Keras class it extends when decay_audit.keras_layers knows that class's variables;
4. its own variables in creation order: (leaf, trainable, condition, kind, index into
   ``ROLES``, created in ``__init__``, rank when the ``shape=`` is a literal tuple); ``condition`` is None when the ``add_weight`` call always
   runs, else the source of the ``if`` tests that guard it (``"?"`` under a loop or ``try``); a variable created in ``__init__`` takes the name scope active when the
   layer was constructed, not the one where it is built (T5's relative_attention_bias);
5. sublayers: h5 key (attribute name) -> classes the attribute may hold;
6. list attributes -> classes of their members (saved under snake_case class-name keys);
7. constant keyword arguments of a sublayer's constructor that decide optional variables;
8. sublayer attributes created in ``__init__`` (they are constructed in this class's
   construction scope);
9. sublayer attributes built in ``__init__`` (their variables take the construction scope);
10. whether it names its layers ``f"{{prefix}}..."`` with ``prefix = name + "_"`` when it is given a
    name (CLIP's encoders): ``load_model`` passes the saved name, so the reloaded layers carry it.

Classes with no variables, no sublayers and no Keras base are left out. Kinds come from the
reviewed map in the generator; ``tests/test_keras_hub_layers.py`` regenerates this table
against the installed keras_hub and compares.
"""

KERAS_HUB_VERSION = {version!r}
"""The keras_hub release this table was generated from."""

'''

FLAGS = {"trainable", "use_bias", "bias_axes", "center", "scale", "rms_scaling", "tie_weights", "use_scale", "score_mode"}


def render(table: dict) -> str:
    roles: list[str] = []
    lines = [HEADER.format(version=table["version"]), "CLASSES: dict[str, tuple] = {"]
    for key, entry in sorted(table["classes"].items()):
        if not (entry["variables"] or entry["sublayers"] or entry["lists"] or entry["model"] or entry["keras_base"]):
            continue
        variables = []
        for leaf, trainable, optional, kind, role, in_init, rank in entry["variables"]:
            if role not in roles:
                roles.append(role)
            variables.append((leaf, trainable, optional, kind, roles.index(role), in_init, rank))
        constants = {attr: {k: v for k, v in values.items() if k in FLAGS}
                     for attr, values in entry["constants"].items()}
        row = (entry["name"], entry["registered"], entry["scopes"], entry["keras_base"], tuple(variables),
               entry["sublayers"], entry["lists"], {k: v for k, v in constants.items() if v},
               entry["created_in_init"], entry["built_in_init"], entry["prefixes"])
        lines.append(f"    {key!r}: {row!r},")
    lines.append("}")
    lines.append("")
    lines.append("ROLES: tuple[str, ...] = (")
    lines.extend(f"    {role!r}," for role in roles)
    lines.append(")")
    return "\n".join(lines) + "\n"


ROLES_HEADER = '''"""Roles of keras_hub classes' own variables, by class name: GENERATED, do not edit.

Generated by ``tools/generate_keras_hub_table.py`` from keras_hub {version}, beside
``keras_hub_layers.py``. Small on purpose: the classifier reads it for every layer class Keras
does not know, and the full table is imported only when a file holds keras_hub classes.
A class name shared by several keras_hub classes is listed only where all agree on a leaf.
"""

KERAS_HUB_VERSION = {version!r}

# class name -> leaf -> (kind, trainable, role)
ROLES_BY_CLASS_NAME: dict[str, dict[str, tuple[str, bool, str]]] = '''


def render_roles(table: dict) -> str:
    seen: dict[str, dict[str, set]] = {}
    for entry in table["classes"].values():
        for leaf, trainable, _, kind, role, _, _ in entry["variables"]:
            seen.setdefault(entry["name"], {}).setdefault(leaf or "variable", set()).add((kind, trainable, role))
    agreed = {name: {leaf: next(iter(found)) for leaf, found in sorted(leaves.items()) if len(found) == 1}
              for name, leaves in sorted(seen.items())}
    lines = [ROLES_HEADER.format(version=table["version"]) + "{"]
    lines.extend(f"    {name!r}: {leaves!r}," for name, leaves in agreed.items() if leaves)
    lines.append("}")
    return "\n".join(lines) + "\n"


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
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    raise SystemExit(main())
