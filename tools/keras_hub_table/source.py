"""Read keras_hub's layer classes from their SOURCE (``ast``: no class is built or run).

For each class the reader follows ``self.method()`` and ``super().method()`` calls from
``__init__`` and ``build`` and records what ``keras.saving.load_model`` needs to name the
class's variables: its own ``add_weight`` calls in creation order (and the ``if`` tests that
guard them), its sublayers and the attributes they are saved under, constant constructor
arguments that fix optional variables, and whether it opens a name scope for its sublayers.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
import textwrap

_MAX_CALL_DEPTH = 6
"""How many ``self.method()`` calls deep a reading follows from ``__init__`` or ``build``."""


def class_id(cls) -> str:
    """How the table names a class: keras' own by class name, keras_hub's by module path."""
    if cls.__module__.startswith("keras_hub"):
        return f"{cls.__module__}.{cls.__qualname__}"
    return cls.__name__


class KerasHubSource:
    """Every layer class the installed keras_hub defines, and the layer classes its code passes to
    constructors (``SwinTransformerStage(downsample=PatchMerging if ... else None)``), which a
    class's own source cannot tell."""

    def __init__(self):
        self.classes = _layer_classes()
        self.bindings = _bindings(self.classes)

    def read(self, cls) -> ClassReader:
        reader = ClassReader(cls, self.bindings.get(class_id(cls), {}))
        reader.read()
        return reader


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
                values = (
                    [keyword.value.body, keyword.value.orelse]
                    if isinstance(keyword.value, ast.IfExp)
                    else [keyword.value]
                )
                for value in values:
                    resolved = _resolve(value, module) if isinstance(value, (ast.Name, ast.Attribute)) else None
                    if inspect.isclass(resolved) and issubclass(resolved, keras.layers.Layer):
                        bound = found.setdefault(class_id(target), {}).setdefault(keyword.arg, [])
                        if resolved not in bound:
                            bound.append(resolved)
    return found


class ClassReader:
    """What one class's source says, gathered while its ``__init__`` and ``build`` are read."""

    def __init__(self, cls, bindings: dict[str, list]):
        self.cls = cls
        self.bindings = bindings
        """Constructor argument -> layer classes keras_hub code passes for it."""
        self.variables: list[tuple] = []  # (leaf, trainable, condition, attribute, created in __init__, rank)
        self.sublayers: dict[str, list[str]] = {}
        self.lists: dict[str, list[str]] = {}
        self.constants: dict[str, dict] = {}
        self.built_outside_scope: set[str] = set()
        self.functional = False
        self.locals: dict[str, str] = {}
        self.local_calls: dict[str, ast.Call] = {}
        """The constructor call each local layer variable was last assigned (for its ``name=``)."""
        self.local_lists: dict[str, tuple[str, ast.Call]] = {}
        """Local lists of layers (``inner_layers.append(AlbertLayer(...))``): member class and call."""
        self.created_in_init: set[str] = set()
        self.prefixes = False
        self.prefix_from_name = False
        self.root = "__init__"
        """The entry method being read (``__init__`` or ``build``)."""
        self.defaults: dict[str, list] = {}
        self.aliases: dict[str, str] = {}
        self.tracking: dict[str, str | None] = {}
        """Sublayer and list attributes in the order the source first assigns a layer to them
        (``__init__``, then ``build``), with a regex of the ``name=`` the layer is given (None when
        not read): Keras tracks sublayers in assignment order, which is ``model.weights`` order."""
        self.parameters: set[str] = set()
        """``__init__`` parameters: ``self.backbone = backbone`` tracks a layer the caller built."""
        self.from_parameters: set[str] = set()
        """Attributes assigned an ``__init__`` parameter (a layer only if the caller passes one)."""
        self.tracking_closed = False
        """Set at a Functional model's ``super().__init__(inputs, outputs)``: Keras tracks every
        layer of the graph there, in graph order, so later assignments (Swin's ``self.norm``)
        change nothing."""

    def method(self, owner, name):
        """(defining class, parsed function) of ``owner.name`` while keras_hub defines it, else (None, None)."""
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
        init = self.method(self.cls, "__init__")[1]
        if init is not None:
            self.parameters = {a.arg for a in init.args.args[1:] + init.args.kwonlyargs}
            # Constructor parameters whose default is a layer class (Swin's ``norm_layer``).
            arguments = init.args.args[-len(init.args.defaults) :] if init.args.defaults else []
            module = sys.modules[self.cls.__module__]
            for argument, default in zip(arguments, init.args.defaults):
                resolved = _resolve(default, module)
                if resolved is not None:
                    self.defaults[argument.arg] = [resolved]
            for argument, bound in self.bindings.items():
                self.defaults.setdefault(argument, [])
                self.defaults[argument] += [b for b in bound if b not in self.defaults[argument]]
        for name in ("__init__", "build"):
            self.root = name
            self.run(self.cls, name, guarded="", depth=0, stack=())

    def run(self, owner, name, guarded, depth, stack):
        """Read ``owner.name``'s body, unless it is too deep or already on the call chain."""
        klass, tree = self.method(owner, name)
        if tree is None or depth > _MAX_CALL_DEPTH or (klass, name) in stack:
            return
        _MethodBody(self, klass, name, depth, stack + ((klass, name),)).body(tree.body, guarded)

    def serialized_layers(self) -> set[str]:
        """Attributes ``get_config`` saves as layers (``keras.layers.serialize(self.backbone)``):
        of the attributes assigned a constructor argument, those that hold layers."""
        found: set[str] = set()
        for klass in self.cls.__mro__:
            if not klass.__module__.startswith("keras_hub"):
                break
            tree = self.method(klass, "get_config")[1] if "get_config" in klass.__dict__ else None
            for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)) if tree is not None else ():
                name = call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                if name == "serialize" and call.args and isinstance(call.args[0], ast.Attribute):
                    if _is_self(call.args[0].value):
                        found.add(call.args[0].attr)
        return found

    def track(self, attr: str, value) -> None:
        """Note the first assignment of a layer to ``attr`` (a call's ``name=`` read as a regex),
        while Keras still tracks in assignment order."""
        if attr not in self.tracking and not self.tracking_closed:
            self.tracking[attr] = _name_pattern(value) if isinstance(value, ast.Call) else None

    def record_constants(self, attr, call):
        constants = {}
        for keyword in call.keywords:
            if (
                keyword.arg
                and isinstance(keyword.value, ast.Constant)
                and isinstance(keyword.value.value, (bool, int, float, str, type(None)))
            ):
                constants[keyword.arg] = keyword.value.value
        if constants:
            previous = self.constants.get(attr)
            self.constants[attr] = constants if previous is None or previous == constants else {}


class _MethodBody:
    """One method being read for a ClassReader. What stays fixed while its statements are read is
    held here: the class that defines it, that class's module (names resolve there), the method's
    name, how many calls deep it is and the call chain that reached it. ``guarded``, the condition
    text under which a statement runs, changes with every ``if`` and is passed along instead."""

    def __init__(self, reader: ClassReader, klass, method: str, depth: int, stack: tuple):
        self.reader = reader
        self.klass = klass
        self.module = sys.modules[klass.__module__]
        self.method = method
        self.depth = depth
        self.stack = stack

    def body(self, statements, guarded):
        for statement in statements:
            self.statement(statement, guarded)

    def statement(self, node, guarded):
        if isinstance(node, ast.If):
            # ``guarded`` is the condition text under which the code runs ("?" when not expressible).
            test = ast.unparse(node.test)
            body = f"({guarded}) and ({test})" if guarded and guarded != "?" else ("?" if guarded else test)
            orelse = (
                f"({guarded}) and not ({test})" if guarded and guarded != "?" else ("?" if guarded else f"not ({test})")
            )
            self.body(node.body, body)
            self.body(node.orelse, orelse)
            return
        if isinstance(node, (ast.For, ast.While, ast.With, ast.Try)):
            inner_guarded = "?" if isinstance(node, (ast.For, ast.While, ast.Try)) else guarded
            for field in ("body", "orelse", "finalbody"):
                self.body(getattr(node, field, []) or [], inner_guarded)
            for handler in getattr(node, "handlers", []) or []:
                self.body(handler.body, True)
            return
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Return)):
            if isinstance(node, ast.Return) and node.value is not None:
                self.expression(node.value, guarded, target=None)
            return
        if isinstance(node, ast.Assign):
            for target in node.targets:
                self.expression(node.value, guarded, target=target)
            return
        if isinstance(node, ast.AnnAssign) and node.value is not None:
            self.expression(node.value, guarded, target=node.target)
            return
        if isinstance(node, ast.Expr):
            self.expression(node.value, guarded, target=None)

    def expression(self, value, guarded, target):
        reader = self.reader
        attr = target.attr if isinstance(target, ast.Attribute) and _is_self(target.value) else None
        local = target.id if isinstance(target, ast.Name) else None
        if local == "prefix" and any(isinstance(n, ast.Name) and n.id == "name" for n in ast.walk(value)):
            reader.prefix_from_name = True  # ``prefix = str(name) + "_" if name is not None else ""``
        # Calls nested anywhere in the expression, in source order.
        for call in _calls_in_order(value):
            self.call(call, guarded, attr if call is value else None)
        if attr and isinstance(value, ast.Name) and value.id in reader.defaults:
            reader.aliases[attr] = value.id  # ``self.norm_layer = norm_layer``
        layer_class = self.layer_class_of(value)
        if layer_class and attr and self.alternatives(value):
            for alternative in self.alternatives(value)[1:]:
                reader.sublayers.setdefault(attr, [])
                if alternative not in reader.sublayers[attr]:
                    reader.sublayers[attr].append(alternative)
        if (layer_class and attr) or (attr and isinstance(value, (ast.List, ast.ListComp, ast.Tuple))):
            if reader.root == "__init__":
                reader.created_in_init.add(attr)
        if layer_class and attr:
            reader.track(attr, value)
            reader.sublayers.setdefault(attr, [])
            if layer_class not in reader.sublayers[attr]:
                reader.sublayers[attr].append(layer_class)
            reader.record_constants(attr, value)
        elif layer_class and local:
            reader.locals[local] = layer_class
            reader.local_calls[local] = value
        elif isinstance(value, ast.Name) and attr and value.id in reader.locals:
            reader.track(attr, None)
            reader.sublayers.setdefault(attr, []).append(reader.locals[value.id])
        elif isinstance(value, ast.Name) and attr and value.id in reader.parameters and reader.root == "__init__":
            reader.track(attr, None)  # ``self.backbone = backbone``: kept only for models (build_table)
            reader.from_parameters.add(attr)
        elif attr and isinstance(value, (ast.List, ast.ListComp, ast.Tuple)):
            elements = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value.elt]
            members = reader.lists.setdefault(attr, [])
            for element in elements:
                element_class = self.layer_class_of(element) or (
                    reader.locals.get(element.id) if isinstance(element, ast.Name) else None
                )
                if element_class and element_class not in members:
                    members.append(element_class)
            if elements and members:
                reader.track(attr, elements[0])

    def call(self, call, guarded, attr=None):
        reader = self.reader
        func = call.func
        for keyword in call.keywords:
            # ``name=f"{prefix}embedding"`` with ``prefix = str(name) + "_" if name ...`` (CLIP, SigLIP).
            if (
                keyword.arg == "name"
                and isinstance(keyword.value, ast.JoinedStr)
                and keyword.value.values
                and isinstance(keyword.value.values[0], ast.FormattedValue)
                and isinstance(keyword.value.values[0].value, ast.Name)
                and keyword.value.values[0].value.id == "prefix"
                and reader.root == "__init__"
                and reader.prefix_from_name
            ):
                reader.prefixes = True
        if isinstance(func, ast.Attribute) and func.attr in ("add_weight", "add_variable") and _is_self(func.value):
            leaf = _constant_kwarg(call, "name")
            trainable = _constant_kwarg(call, "trainable", default=True)
            shape = next((k.value for k in call.keywords if k.arg == "shape"), call.args[0] if call.args else None)
            rank = len(shape.elts) if isinstance(shape, (ast.Tuple, ast.List)) else None
            reader.variables.append(
                (
                    leaf if isinstance(leaf, str) else None,
                    trainable is not False,
                    guarded or None,
                    attr,
                    reader.root == "__init__",
                    rank,
                )
            )
            return
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "append"
            and isinstance(func.value, ast.Attribute)
            and _is_self(func.value.value)
            and call.args
        ):
            element = call.args[0]
            element_class = self.layer_class_of(element) or (
                reader.locals.get(element.id) if isinstance(element, ast.Name) else None
            )
            element_call = reader.local_calls.get(element.id) if isinstance(element, ast.Name) else element
            if not element_class and isinstance(element, ast.Name) and element.id in reader.local_lists:
                # A list of lists of layers (ALBERT's groups of inner layers): Keras tracks the members.
                element_class, element_call = reader.local_lists[element.id]
            if element_class:
                reader.track(func.value.attr, element_call)
                if reader.root == "__init__":
                    reader.created_in_init.add(func.value.attr)
                members = reader.lists.setdefault(func.value.attr, [])
                if element_class not in members:
                    members.append(element_class)
            return
        if isinstance(func, ast.Attribute) and func.attr == "append" and isinstance(func.value, ast.Name) and call.args:
            member = call.args[0]
            member_class = self.layer_class_of(member) or (
                reader.locals.get(member.id) if isinstance(member, ast.Name) else None
            )
            if member_class:
                member_call = reader.local_calls.get(member.id) if isinstance(member, ast.Name) else member
                reader.local_lists.setdefault(func.value.id, (member_class, member_call))
            return
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "build"
            and isinstance(func.value, ast.Attribute)
            and _is_self(func.value.value)
            and self.method == "__init__"
        ):
            reader.built_outside_scope.add(func.value.attr)
            return
        if isinstance(func, ast.Attribute) and _is_self(func.value):
            reader.run(reader.cls, func.attr, guarded, self.depth + 1, self.stack)
            return
        if (
            isinstance(func, ast.Attribute)
            and func.attr == "__init__"
            and isinstance(func.value, ast.Name)
            and (len(call.args) >= 2 or any(k.arg == "inputs" for k in call.keywords))
        ):
            reader.functional = True  # ``Task.__init__(self, inputs=..., outputs=...)`` (ViTImageClassifier)
            reader.tracking_closed = True
            return
        if (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Call)
            and isinstance(func.value.func, ast.Name)
            and func.value.func.id == "super"
        ):
            if func.attr == "__init__" and (call.args or any(k.arg == "inputs" for k in call.keywords)):
                reader.functional = True
                reader.tracking_closed = True
            klass = self.klass
            position = klass.__mro__.index(klass)
            for base in klass.__mro__[position + 1 :]:
                if func.attr in base.__dict__:
                    if base.__module__.startswith("keras_hub"):
                        reader.run(base, func.attr, guarded, self.depth + 1, self.stack)
                    break

    def alternatives(self, value):
        """Classes a call may construct when it calls a constructor argument (Swin's ``norm_layer``)."""
        import keras

        if not isinstance(value, ast.Call):
            return []
        func = value.func
        parameter = (
            func.id
            if isinstance(func, ast.Name)
            else (
                self.reader.aliases.get(func.attr) if isinstance(func, ast.Attribute) and _is_self(func.value) else None
            )
        )
        return [
            class_id(c)
            for c in self.reader.defaults.get(parameter, ())
            if inspect.isclass(c) and issubclass(c, keras.layers.Layer)
        ]

    def layer_class_of(self, value):
        if not isinstance(value, ast.Call):
            return None
        resolved = _resolve(value.func, self.module)
        if resolved is None or not inspect.isclass(resolved):
            alternatives = self.alternatives(value)
            return alternatives[0] if alternatives else None
        import keras

        if inspect.isclass(resolved) and issubclass(resolved, keras.layers.Layer):
            return class_id(resolved)
        return None


def _name_pattern(call) -> str | None:
    """A regex for the ``name=`` a constructor call gives its layer: a constant as written,
    an f-string with ``.*`` for each formatted part (``f"transformer_layer_{i}"``); else None."""
    import re

    value = next((k.value for k in call.keywords if k.arg == "name"), None)
    if isinstance(value, ast.Constant) and isinstance(value.value, str):
        return re.escape(value.value)
    if isinstance(value, ast.JoinedStr):
        parts = []
        for part in value.values:
            if isinstance(part, ast.Constant) and isinstance(part.value, str):
                parts.append(re.escape(part.value))
            else:
                parts.append(".*")
        return "".join(parts)
    return None


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
