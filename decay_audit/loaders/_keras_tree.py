"""Walk a Keras 3 weights tree (``model.weights.h5``) beside its ``config.json``.

The h5 stores each layer's variables by position under ``.../vars/<i>`` and nests
sublayers under ``layers/<key>`` (lists) or ``<attribute>`` (MultiHeadAttention's
``query_dense``, an RNN's ``cell``, a subclassed model's ``self.dense1``). Keras 3.15
writes the layer's real name as the ``name`` attribute of each ``vars`` group; older
files do not, so config layers are also matched by the key Keras derives from the class.

Paths are rebuilt the way ``keras.saving.load_model`` names the variables of the model
it reconstructs, because that is the model a user of the file trains.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from decay_audit.inventory import VariableRecord
from decay_audit.kinds import Kind
from decay_audit.knowledge.keras import (
    ADAPTABLE_CLASSES,
    LAYER_VARIABLES,
    NON_SCOPING_CONTAINERS,
    SUBLAYER_ATTRIBUTES,
    SUBLAYER_CLASS_BY_PARENT,
    SUBLAYER_CONFIG_BY_PARENT,
    LayerVariables,
    VariableSlot,
    keras_class_name_candidates,
    layer_variables,
    loaded_shape,
    quantization_mode,
    slots_for_count,
    wraps_a_layer,
)
from decay_audit.knowledge.keras_hub import (
    HubClass,
    builtin_slots,
    class_for_entry,
    classes_for_key,
    hub_class,
    hub_slots,
    in_init_leaves,
    mapped_layer_variables,
)
from decay_audit.loaders._h5index import H5Node, snapshot
from decay_audit.loaders._keras_config import entry_name, is_builtin_entry, keras_keys, layer_configs, nested_entries
from decay_audit.loaders.interface import Limits

_KERAS_MODEL_NAME = re.compile(r"^(functional|sequential|model)(_\d+)?$")
_ROOT_SKIP = frozenset({"optimizer", "metrics", "compile_metrics", "loss", "vars", "layers"})


@dataclass(frozen=True)
class _Layer:
    """A layer being walked: where it is in the h5, and what the config says of it."""

    group: H5Node
    key: str
    name: str
    class_name: str | None
    builtin: bool
    config: Mapping[str, Any]
    entry: Mapping[str, Any] | None
    scope: tuple[str, ...]
    parents: tuple[str, ...]
    trainable: bool
    hint: str | None = None
    nested: bool = False
    hub: str | None = None
    """The keras_hub table id (``module.ClassName``) when the class is a known keras_hub class."""
    configless: bool = False
    """A Keras class created inside keras_hub code: ``config`` holds only the constant
    constructor arguments read from the source, so optional variables are decided by count."""
    construction: tuple[str, ...] | None = None
    """The name scope active when the layer was constructed, where it differs from ``scope``:
    variables created in ``__init__`` take it (Keras 3.15 ``add_weight`` opens only the layer's
    own name, so T5's relative_attention_bias is ``self_attention/embeddings``)."""
    context: Mapping[str, Any] | None = None
    """Config of the nearest enclosing keras_hub model: decides guarded variables (``use_mask_token``)."""


@dataclass(frozen=True)
class _SharedVariable:
    """A layer's variable that belongs to one of its sublayers (VariableSlot.shared_from), waiting
    for that sublayer's records: ``model.weights`` lists it once, at ``position``."""

    position: int
    slot: VariableSlot
    dataset: H5Node
    record: VariableRecord
    """The record to keep if the sublayer holds no such variable (the layer's own copy)."""


def _vars_name(group: H5Node) -> str | None:
    vars_group = group.get("vars")
    return vars_group.name_attr if vars_group is not None else None


def _is_group(obj: H5Node) -> bool:
    return not obj.is_dataset


def _known_hub(class_id: str) -> HubClass:
    """The table entry of an id known to be in the keras_hub table: ``_Layer.hub`` holds only ids
    from ``class_for_entry`` or candidates checked against ``hub_class``."""
    entry = hub_class(class_id)
    assert entry is not None, class_id
    return entry


def _scopes(layer: _Layer) -> bool:
    """Whether sublayers' variable paths start with this layer's name (see NON_SCOPING_CONTAINERS)."""
    if layer.hub is not None:
        return _known_hub(layer.hub).scopes
    if layer.entry is None and layer.class_name is None and "layers" in layer.group:
        # Weights-only file: the model a user rebuilds in code names the variables. A Functional
        # lists its InputLayers among its layers and creates its layers outside its own name scope
        # (``d1/kernel``); a Sequential or a subclassed Model lists no InputLayer and builds its
        # layers inside its scope (Keras 3.15: ``seq/d1/kernel``, even with a ``keras.Input``
        # first). A root whose own name the file does not record (Keras before 3.15) stays unscoped.
        if _lists_input_layer(layer.group["layers"]):
            return False
        return layer.nested or _vars_name(layer.group) is not None
    if layer.builtin and (layer.class_name in NON_SCOPING_CONTAINERS or wraps_a_layer(layer.config)):
        return False
    if layer.class_name == "Model" and layer_configs(layer.entry):
        return False  # a Functional saved under the generic class name
    if layer.class_name == "Sequential" and layer.builtin:
        if not layer.nested:
            return False
        first = layer_configs(layer.entry)[:1]
        return not (first and first[0].get("class_name") == "InputLayer")
    return True


_INPUT_LAYER_KEY = re.compile(r"^input_layer(_\d+)?$")


def _lists_input_layer(layers_group: H5Node) -> bool:
    """Whether a saved ``layers`` list holds an InputLayer (keyed ``input_layer``, ``input_layer_1``)."""
    return any(_INPUT_LAYER_KEY.match(key) for key in layers_group.keys())


class KerasTreeWalker:
    """Turns one weights tree (+ optional config) into VariableRecords."""

    def __init__(self, subject: str, limits: Limits):
        self.subject = subject
        self.limits = limits
        self.visited = 0
        self.records: list[VariableRecord] = []
        self.notes: list[str] = []

    def walk_model(self, h5: Any, model_entry: Mapping[str, Any] | None) -> list[VariableRecord]:
        """Records for every variable under ``h5`` (an open h5py File, or an index already copied into
        H5Nodes: the join of a sharded checkpoint's shards), with the model's config entry."""
        root = h5 if isinstance(h5, H5Node) else snapshot(h5, self.subject, self.limits)
        config = model_entry.get("config") if isinstance(model_entry, Mapping) else None
        config = config if isinstance(config, Mapping) else {}
        class_name = model_entry.get("class_name") if isinstance(model_entry, Mapping) else None
        name = entry_name(model_entry) if model_entry else None
        hub = class_for_entry(model_entry)
        root_vars_name = _vars_name(root)
        if model_entry is None and root_vars_name and not _KERAS_MODEL_NAME.match(root_vars_name):
            # Weights-only file: keras_hub models are named after their class (``bert_backbone``).
            guesses = [c for c in classes_for_key(root_vars_name) if hub_class(c)]
            hub = guesses[0] if len(guesses) == 1 else None
        model = _Layer(
            group=root,
            key="",
            name=name or _vars_name(root) or "model",
            class_name=class_name if isinstance(class_name, str) else (_known_hub(hub).name if hub else None),
            builtin=is_builtin_entry(model_entry),
            config=config,
            entry=model_entry,
            scope=(),
            parents=(),
            trainable=bool(config.get("trainable", True)),
            hub=hub,
            context=config if hub else None,
        )
        self._walk(model, is_root=True)
        if model_entry is None:
            self.records = unknown_trainability(self.records)
            unknown = sum(1 for r in self.records if not r.trainable_known)
            if unknown:
                self.notes.append(unknown_trainability_note(unknown))
        return self.records

    # -- one layer -------------------------------------------------------------------------

    def _walk(self, layer: _Layer, is_root: bool = False) -> None:
        self._count()
        own_scope = layer.scope + (layer.name,)
        vars_group = layer.group.get("vars")
        shared: list[_SharedVariable] = []
        if vars_group is not None and _is_group(vars_group):
            shared = self._own_variables(layer, vars_group, own_scope)
        child_scope = own_scope if _scopes(layer) else layer.scope
        child_parents = layer.parents + ((layer.class_name or "?"),)
        walked: dict[str, list[VariableRecord]] = {}
        for key in _attribute_order(layer):
            if key == "vars" or (is_root and key in _ROOT_SKIP and key != "layers"):
                continue
            child = layer.group[key]
            if not _is_group(child):
                continue
            start = len(self.records)
            if key == "layers":
                self._walk_list(layer, child, child_scope, child_parents)
            else:
                self._walk_attribute(layer, key, child, child_scope, child_parents)
            if shared:  # only a layer sharing a sublayer's variable needs to know which records are whose
                walked[_public(key)] = self.records[start:]
        for pending in reversed(shared):
            self._place_shared(pending, walked)

    def _place_shared(self, pending: _SharedVariable, walked: Mapping[str, list[VariableRecord]]) -> None:
        """Move the sublayer's record of a shared variable to the position ``model.weights`` gives it
        (the owning layer's list, where the wrapper tracks it first); the wrapper's copy in the file
        is the same variable saved twice and gets no record. A sublayer whose leaves the file does
        not name (no config) yields its variable of the same shape, named by the wrapper's table."""
        slot = pending.slot
        members = walked.get(slot.shared_from or "", [])
        found = next((r for leaf in slot.shared_leaves for r in members if r.leaf_known and r.leaf == leaf), None)
        if found is None:
            found = next((r for r in members if not r.leaf_known and r.shape == pending.dataset.shape), None)
            if found is not None:
                leaf = slot.shared_leaves[0] if slot.shared_leaves else slot.leaf
                renamed = dataclasses.replace(
                    found, leaf=leaf, path=f"{found.path.rpartition('/')[0]}/{leaf}".lstrip("/"), leaf_known=True
                )
                self.records[next(i for i, r in enumerate(self.records) if r is found)] = renamed
                self._name_bias_beside(renamed, [r for r in members if r is not found and not r.leaf_known])
                found = renamed
        if found is None:
            self.records.insert(pending.position, pending.record)
            return
        index = next(i for i, r in enumerate(self.records) if r is found)
        self.records.insert(pending.position, self.records.pop(index))

    def _name_bias_beside(self, kernel: VariableRecord, unnamed: list[VariableRecord]) -> None:
        """A wrapped layer of unknown class whose kernel the wrapper named, and one other variable:
        a vector as wide as the kernel's output is the ``bias`` every Keras kernel layer (Dense,
        Conv*, EinsumDense) creates after its kernel."""
        if kernel.leaf != "kernel" or len(unnamed) != 1 or not kernel.shape:
            return
        other = unnamed[0]
        if other.shape != (kernel.shape[-1],):
            return
        index = next(i for i, r in enumerate(self.records) if r is other)
        path = f"{other.path.rpartition('/')[0]}/bias".lstrip("/")
        self.records[index] = dataclasses.replace(other, leaf="bias", path=path, leaf_known=True)

    def _walk_list(self, parent: _Layer, group: Any, scope: tuple[str, ...], parents: tuple[str, ...]) -> None:
        entries = layer_configs(parent.entry)
        by_name = {entry_name(entry): entry for entry in entries}
        by_key = keras_keys(entries)
        nested = nested_entries(parent.config) if parent.hub is not None else {}
        prefix = None
        if parent.hub is not None and parent.entry is not None and _known_hub(parent.hub).prefixes:
            prefix = f"{parent.name}_"
        # keras_hub models keep their sorted order here: their sharded presets are joined from several
        # files, where header addresses do not compare, and both must list the same rows.
        ordered = (
            _hub_list_order(parent, group, prefix)
            if parent.hub is not None and not entries
            else _ordered_keys(group, entries, by_key, by_address=parent.hub is None)
        )
        for key in ordered:
            child = group[key]
            if not _is_group(child):
                continue
            name = _vars_name(child)
            entry = by_name.get(name) if name else None
            if entry is None:
                entry = by_key.get(key)
            if name and prefix and not name.startswith(prefix):
                name = prefix + name  # the name this layer gets when load_model rebuilds its model
            if entry is None and parent.hub is not None:
                # A keras_hub Functional model: its config holds constructor arguments, not its
                # layers; nested models it was given (a Task's backbone) are config entries.
                entry = nested.get(key)
                if entry is None:
                    hub_parent = _known_hub(parent.hub)
                    candidates = classes_for_key(key, _referenced_classes(parent.hub))
                    constants: Mapping[str, Any] = {}
                    if name and hub_parent.attribute_classes(name):
                        # keras_hub models keep each layer in an attribute of the layer's own name
                        # (``self.encoder_position_embedding = PositionEmbedding(..., trainable=False)``).
                        candidates = [c for c in hub_parent.attribute_classes(name) if c in candidates] or candidates
                        constants = hub_parent.attribute_constants(name)
                    self._walk_hub_child(parent, key, child, candidates, constants, scope, parents, name, in_init=True)
                    continue
            self._walk_child(parent, key, child, entry, scope, parents, name)

    def _walk_hub_child(
        self,
        parent: _Layer,
        key: str,
        group: Any,
        candidates: list[str] | tuple[str, ...],
        constants: Mapping[str, Any],
        scope: tuple[str, ...],
        parents: tuple[str, ...],
        vars_name: str | None,
        attribute: str | None = None,
        in_init: bool = False,
    ) -> None:
        """A sublayer created by keras_hub code: its class comes from the generated table."""
        hub_parent = hub_class(parent.hub) if parent.hub else None
        construction = scope
        if hub_parent is not None and attribute is not None:
            in_init = (
                in_init or attribute in hub_parent.created_in_init or f"_{attribute}" in hub_parent.created_in_init
            )
        if in_init:
            construction = parent.construction if parent.construction is not None else parent.scope
            if (
                hub_parent is not None
                and attribute is not None
                and (attribute in hub_parent.built_in_init or f"_{attribute}" in hub_parent.built_in_init)
            ):
                scope = construction
        chosen = _fit(candidates, group)
        if chosen is None:
            self._walk_child(parent, key, group, None, scope, parents, vars_name)
            return
        hub = chosen if hub_class(chosen) is not None else None
        class_name = _known_hub(hub).name if hub else chosen
        self._walk(
            _Layer(
                group=group,
                key=key,
                name=vars_name or key,
                class_name=class_name,
                builtin=hub is None,
                config=dict(constants),
                entry=None,
                scope=scope,
                parents=parents,
                trainable=parent.trainable and constants.get("trainable", True) is not False,
                nested=True,
                hub=hub,
                configless=hub is None,
                construction=construction,
                context=parent.context,
            )
        )

    def _walk_attribute(
        self,
        parent: _Layer,
        key: str,
        group: Any,
        scope: tuple[str, ...],
        parents: tuple[str, ...],
        members_of: str | None = None,
    ) -> None:
        if "vars" not in group and not any(k == "layers" for k in group.keys()):
            # A Python list/dict attribute (``self.blocks = [...]``): its members are
            # layers of the parent, and lists open no name scope.
            self._count()
            for sub_key in _list_order(group):
                sub = group[sub_key]
                if _is_group(sub):
                    self._walk_attribute(parent, sub_key, sub, scope, parents, members_of=key)
            return
        hub_parent = hub_class(parent.hub) if parent.hub else None
        if hub_parent is not None and (members_of is not None or hub_parent.attribute_classes(key)):
            if members_of is not None:
                candidates = classes_for_key(key, hub_parent.list_classes(members_of))
                constants: Mapping[str, Any] = {}
            else:
                candidates = list(hub_parent.attribute_classes(key))
                constants = hub_parent.attribute_constants(key)
            self._walk_hub_child(
                parent,
                key,
                group,
                candidates,
                constants,
                scope,
                parents,
                _vars_name(group),
                attribute=members_of or key,
            )
            return
        entry = None
        fixed_class = None
        config: Mapping[str, Any] | None = None
        parent_class = parent.class_name if parent.builtin else parent.hint
        attribute = _public(key)
        if hub_parent is not None and hub_parent.keras_base:
            parent_class = hub_parent.keras_base
            if (parent_class, attribute) in SUBLAYER_CLASS_BY_PARENT:
                self._walk_hub_child(
                    parent,
                    key,
                    group,
                    [SUBLAYER_CLASS_BY_PARENT[(parent_class, attribute)]],
                    {},
                    scope,
                    parents,
                    _vars_name(group),
                )
                return
        if parent_class is not None and (parent_class, attribute) in SUBLAYER_CLASS_BY_PARENT:
            fixed_class = SUBLAYER_CLASS_BY_PARENT[(parent_class, attribute)]
            derive = SUBLAYER_CONFIG_BY_PARENT.get((parent_class, attribute))
            config = derive(parent.config) if derive else parent.config
        else:
            config_key = "layer" if key == "forward_layer" else key
            candidate = parent.config.get(config_key)
            if key == "backward_layer" and not isinstance(candidate, Mapping):
                candidate = parent.config.get("layer")
            if isinstance(candidate, Mapping) and "class_name" in candidate:
                entry = candidate
        self._walk_child(
            parent, key, group, entry, scope, parents, _vars_name(group), fixed_class=fixed_class, fixed_config=config
        )

    def _walk_child(
        self,
        parent: _Layer,
        key: str,
        group: Any,
        entry: Mapping[str, Any] | None,
        scope: tuple[str, ...],
        parents: tuple[str, ...],
        vars_name: str | None,
        fixed_class: str | None = None,
        fixed_config: Mapping[str, Any] | None = None,
    ) -> None:
        if fixed_class is not None and parent.builtin:
            class_name, builtin, config = fixed_class, True, fixed_config or {}
        elif fixed_class is not None:
            # The parent's class was only guessed from its name, so the sublayer's is a guess too.
            class_name, builtin, config = None, False, {}
        elif entry is not None:
            raw_class = entry.get("class_name")
            class_name = raw_class if isinstance(raw_class, str) else None
            builtin = is_builtin_entry(entry)
            raw_config = entry.get("config")
            config = raw_config if isinstance(raw_config, Mapping) else {}
        else:
            class_name, builtin, config = None, False, {}
        hint = fixed_class if fixed_class is not None and class_name is None else None
        if class_name is None and hint is None:
            candidates = keras_class_name_candidates(key) or keras_class_name_candidates(vars_name or "")
            hint = candidates[0] if candidates else None
        name = vars_name or (entry_name(entry) if entry else None) or key
        trainable = parent.trainable and bool(config.get("trainable", True))
        hub = class_for_entry(entry)
        self._walk(
            _Layer(
                group=group,
                key=key,
                name=name,
                class_name=class_name,
                builtin=builtin,
                config=config,
                entry=entry,
                scope=scope,
                parents=parents,
                trainable=trainable,
                hint=hint,
                nested=True,
                hub=hub,
                context=config if hub else parent.context,
            )
        )

    # -- variables -------------------------------------------------------------------------

    def _own_variables(self, layer: _Layer, vars_group: Any, scope: tuple[str, ...]) -> list[_SharedVariable]:
        """Records of the layer's own ``vars``; variables it shares with a sublayer are returned
        instead, to be placed once the sublayer is walked."""
        datasets = []
        for key in vars_group.keys():
            self._count()
            item = vars_group[key]
            if item.is_dataset:
                datasets.append((_index(key), key, item))
        if not datasets:
            return []
        datasets.sort(key=lambda entry: entry[0])
        self.limits.check("max_variables", len(self.records) + len(datasets), self.subject)
        slots = None
        plan: LayerVariables | None = None
        hub_base = _known_hub(layer.hub).keras_base if layer.hub is not None else None
        mapped = None
        if layer.entry is None and layer.context is not None and (layer.hub is not None or layer.configless):
            # A layer keras_hub code creates, quantized through its model's DTypePolicyMap, which
            # is keyed by ``layer.path``: the name scope it is built in (Keras 3.15 build_wrapper).
            # In a weights-only file (no map) the stored dtypes say the mode where they can.
            keras_class = hub_base if layer.hub is not None else layer.class_name
            mapped = mapped_layer_variables(
                keras_class or "", layer.config, layer.context, "/".join(scope), tuple(d.dtype for _, _, d in datasets)
            )
        if mapped is not None:
            plan = mapped
        elif (
            layer.hub is not None
            and hub_base in ADAPTABLE_CLASSES
            and layer.entry is not None
            and (quantization_mode(layer.config) is not None or layer.config.get("lora_rank"))
        ):
            # A keras_hub subclass of a quantizable Keras class (keras_hub's ReversibleEmbedding):
            # its config holds the Keras base's arguments, dtype policy and lora_rank included.
            plan = layer_variables(hub_base, layer.config)
        elif layer.hub is not None:
            slots = hub_slots(layer.hub, len(datasets), layer.context, tuple(len(d.shape) for _, _, d in datasets))
        elif layer.configless and layer.class_name is not None:
            slots = builtin_slots(layer.class_name, layer.config, len(datasets))
        elif layer.class_name is not None:
            plan = layer_variables(layer.class_name, layer.config)
        elif layer.hint is not None:
            slots = slots_for_count(layer.hint, len(datasets))
        if plan is not None:
            slots = plan.stored
        if (
            slots is None
            and layer.builtin
            and layer.entry is not None
            and layer.class_name not in LAYER_VARIABLES
            and layer.class_name not in ADAPTABLE_CLASSES
            and layer.entry.get("module") == "keras.layers"
        ):
            slots = self._built_slots(layer)
        if slots is not None and len(slots) != len(datasets):
            slots, plan = None, None
        if plan is not None and not any(slot.shared_from for slot in plan.stored):
            self._loaded_variables(layer, plan, [d for _, _, d in datasets], vars_group, scope)
            return []
        in_init = in_init_leaves(layer.hub) if layer.hub and slots else frozenset()
        construction_scope = (layer.construction if layer.construction is not None else layer.scope) + (layer.name,)
        shared: list[_SharedVariable] = []
        for position, (_, _key, dataset) in enumerate(datasets):
            slot = slots[position] if slots else None
            leaf = slot.leaf if slot else f"var_{position}"
            record = VariableRecord(
                path="/".join((construction_scope if leaf in in_init else scope) + (leaf,)),
                leaf=leaf,
                layer=layer.name,
                layer_class=layer.class_name,
                shape=dataset.shape,
                dtype=dataset.dtype,
                trainable=layer.trainable and (slot.trainable if slot else True),
                origin=dataset.path,
                leaf_known=slot is not None,
                parent_classes=tuple(c for c in layer.parents if c != "?"),
                layer_builtin=layer.builtin or (layer.hub is not None and slot is not None),
                class_hint=layer.hint if slot is not None else layer.hint,
            )
            if slot is not None and slot.shared_from:
                shared.append(_SharedVariable(len(self.records), slot, dataset, record))
            else:
                self.records.append(record)
        return shared

    def _loaded_variables(
        self, layer: _Layer, plan: LayerVariables, datasets: list[H5Node], vars_group: H5Node, scope: tuple[str, ...]
    ) -> None:
        """Records in ``model.weights`` order of the model ``load_model`` rebuilds, which for a
        quantized or LoRA layer is neither the file's order nor its list of variables: LoRA
        factors are not stored (merged into the kernel on save) yet recreated from ``lora_rank``."""
        stored = dict(zip((slot.leaf for slot in plan.stored), datasets))
        shapes = {leaf: dataset.shape or () for leaf, dataset in stored.items()}
        parent_classes = tuple(c for c in layer.parents if c != "?")
        for slot in plan.loaded:
            dataset = stored.get(slot.leaf) if slot.stored else None
            if dataset is not None:
                shape: tuple[int | None, ...] = dataset.shape or ()
                dtype, origin = dataset.dtype or "", dataset.path
            else:
                shape = loaded_shape(slot, shapes, layer.config)
                dtype = slot.dtype or "float32"
                origin = (
                    f"{vars_group.path}/{slot.leaf} (not in the file: load_model creates it "
                    f"from the layer config's lora_rank)"
                )
            self.records.append(
                VariableRecord(
                    path="/".join(scope + (slot.leaf,)),
                    leaf=slot.leaf,
                    layer=layer.name,
                    layer_class=layer.class_name,
                    shape=shape,
                    dtype=dtype,
                    trainable=layer.trainable and slot.trainable,
                    origin=origin,
                    leaf_known=True,
                    parent_classes=parent_classes,
                    layer_builtin=True,
                    class_hint=layer.hint,
                )
            )

    def _built_slots(self, layer: _Layer) -> tuple[VariableSlot, ...] | None:
        """A public Keras layer class this table does not know (newer Keras): build it, alone,
        from its config and build_config, to learn its variable order. Keras' own code only:
        the class comes from ``keras.layers`` and is deserialised with safe_mode=True."""
        assert layer.entry is not None  # the one caller checks it
        try:
            from decay_audit.loaders._isolate import allow_tensorflow_import
            from decay_audit.quiet_tensorflow import import_tensorflow, initialise_devices

            allow_tensorflow_import()
            import_tensorflow()
            initialise_devices()  # building the layer would initialise them unsilenced (cuInit notices)
            import keras

            entry = dict(layer.entry)
            built = keras.saving.deserialize_keras_object(
                {k: entry[k] for k in ("module", "class_name", "config", "registered_name") if k in entry},
                safe_mode=True,
            )
            if type(built).__module__.split(".")[0] != "keras":
                return None
            build_config = entry.get("build_config")
            if isinstance(build_config, Mapping):
                built.build_from_config(build_config)
            variables = list(built._trainable_variables) + list(built._non_trainable_variables)
            # A variable the layer took from one of its sublayers (a wrapper's ``self.kernel =
            # self.layer.kernel``) is saved under both: name the attribute that owns it.
            owners = {
                id(w): _public(attribute)
                for attribute, value in vars(built).items()
                if isinstance(value, keras.layers.Layer)
                for w in value.weights
            }
        except Exception:  # noqa: BLE001 - the fallback is evidence only; positions remain
            return None
        self.notes.append(
            f"Keras class {layer.class_name} is not in decay-audit's table: built it from its "
            "config to learn its variable order"
        )
        return tuple(
            VariableSlot(
                v.name,
                Kind.OTHER,
                "variable of a Keras class built to learn its order",
                trainable=bool(v.trainable),
                shared_from=owners.get(id(v)),
                shared_leaves=(v.name,) if id(v) in owners else (),
            )
            for v in variables
        )

    def _count(self) -> None:
        self.visited += 1
        self.limits.check("max_objects", self.visited, self.subject)


def unknown_trainability(records: list[VariableRecord]) -> list[VariableRecord]:
    """Records of a weights-only file: a file without a config stores no layer's ``trainable``, so
    the trainability of every variable its class does not create non-trainable is unknown."""
    return [dataclasses.replace(r, trainable_known=False) if r.trainable else r for r in records]


def unknown_trainability_note(count: int) -> str:
    """The inventory note of a weights-only source, so the report says why trainability is unknown."""
    return (
        f"trainability of {count} variables unknown: a weights-only file records values, not which "
        "layers the code that loads it freezes; they are decided as if trainable (the reason says so)"
    )


def _referenced_classes(class_id: str) -> tuple[str, ...]:
    entry = hub_class(class_id)
    if entry is None:
        return ()
    classes = [c for values in entry.sublayers.values() for c in values]
    classes += [c for values in entry.lists.values() for c in values]
    return tuple(dict.fromkeys(classes))


def _fit(candidates: list[str] | tuple[str, ...], group: Any) -> str | None:
    """The candidate class whose variables fit the count saved in ``group`` (the first, if several do)."""
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]
    vars_group = group.get("vars")
    count = sum(1 for k in vars_group.keys() if vars_group[k].is_dataset) if vars_group is not None else 0
    children = {k for k in group.keys() if k != "vars" and not group[k].is_dataset}
    if children:
        # Two classes an attribute may hold (DINOv2's MLP or SwiGLU ``mlp``): the one whose
        # sublayer attributes are the saved children.
        fitting = [
            c
            for c in candidates
            if (hub_entry := hub_class(c)) is not None
            and children
            <= {k.lstrip("_") for k in hub_entry.sublayers} | set(hub_entry.sublayers) | set(hub_entry.lists)
        ]
        candidates = fitting or candidates
    for candidate in candidates:
        if hub_class(candidate) is not None:
            if count == 0 or hub_slots(candidate, count) is not None:
                return candidate
        elif count == 0 or slots_for_count(candidate, count) is not None:
            return candidate
    return candidates[0]


def _list_order(group: Any) -> list[str]:
    """Members of a saved list in list order: Keras keys them ``name``, ``name_1``, ``name_2``, ..."""

    def order(key: str) -> tuple[str, int]:
        stem, _, number = key.rpartition("_")
        if stem and number.isdigit():
            return stem, int(number)
        return key, 0

    return sorted(group.keys(), key=order)


def _attribute_order(layer: _Layer) -> list[str]:
    """Sublayers in creation order where Keras fixes it (MultiHeadAttention: query, key, value,
    output), so the inventory follows ``model.trainable_variables``; other attributes sorted."""
    keys = list(layer.group.keys())
    known = SUBLAYER_ATTRIBUTES.get(layer.class_name or layer.hint or "", ())
    if not known and layer.hub is not None:
        # A keras_hub class: the attributes in the order its source assigns them (Keras tracks
        # sublayers in that order), else the order of the Keras class it extends.
        hub = _known_hub(layer.hub)
        known = tuple(_public(attribute) for attribute, _ in hub.tracking) or SUBLAYER_ATTRIBUTES.get(
            hub.keras_base or "", ()
        )
    by_attribute = {_public(k): k for k in keys}
    first = list(dict.fromkeys(by_attribute[k] for k in known if k in by_attribute))
    lead = ["layers"] if "layers" in keys and "layers" not in first else []
    return lead + first + sorted(k for k in keys if k not in first and k != "layers")


def _public(key: str) -> str:
    """The attribute a saved sublayer key names, without Python's private underscore: Keras 3.15
    saves MultiHeadAttention's sublayers as ``query_dense`` but GroupQueryAttention's, built in
    its ``build`` into private attributes, as ``_query_dense``. The tables name the attribute once."""
    return key.lstrip("_") or key


def _index(key: str) -> int:
    try:
        return int(key)
    except ValueError:
        return 1 << 30


def _ordered_keys(
    group: Any, entries: list[Mapping[str, Any]], by_key: Mapping[str, Any], by_address: bool = True
) -> Iterator[str]:
    """Children in config order (model.weights order) where the config names them, then the rest."""
    keys = list(group.keys())
    by_name_key = {}
    for key in keys:
        child = group[key]
        name = _vars_name(child) if _is_group(child) else None
        if name:
            by_name_key[name] = key
    # Keyed by identity, and a set beside the list: a scan per entry would be quadratic in the
    # layers a config declares (50,000 layers took 31 s).
    key_of_entry = {id(e): k for k, e in by_key.items()}
    ordered: list[str] = []
    placed: set[str] = set()
    for entry in entries:
        entry_key_name = entry_name(entry)
        key = by_name_key.get(entry_key_name) if entry_key_name is not None else None
        if key is None:
            key = key_of_entry.get(id(entry))
        if key is not None and key in group and key not in placed:
            ordered.append(key)
            placed.add(key)
    rest = [k for k in keys if k not in placed]
    ordered.extend(_saved_order(group, rest) if by_address and not entries else sorted(rest))
    yield from ordered


def _saved_order(group: Any, keys: list[str]) -> list[str]:
    """A ``layers`` list with no config to order it (a weights-only file): its members keyed by class
    (``batch_normalization``, ``dense``, ``dense_1``) sort by name, not by their place in the list,
    but Keras saved them in list order and HDF5 allocated their headers in that order (H5Node.address).
    Sorted by name where an address is unknown."""
    nodes = [group[k] for k in keys]
    if not nodes or any(not getattr(node, "address", 0) for node in nodes):
        return sorted(keys)
    return [k for _, k in sorted(zip((node.address for node in nodes), keys))]


def _hub_list_order(parent: _Layer, group: Any, prefix: str | None) -> list[str]:
    """The ``layers`` list of a keras_hub Functional model in ``model.weights`` order, from the
    class's own structure: Keras tracks the attributes its ``__init__`` assigns (``token_embedding``,
    ..., ``transformer_layers``, ``pooled_dense``) before the graph's other layers, and lists a
    model's weights in tracking order, which is not the saved list's (graph) order. Taken from the
    class, not from h5 header addresses, so a preset saved whole and one joined from shards give
    the same rows. A member is matched to an attribute by the ``name=`` the source gives it (the
    attribute's own name where the source gives none), list members also by class; a Task's
    ``backbone`` by its config entry (with no config, by its class name). Members no attribute
    claims follow in saved order (H5Node.address; a join of shards numbers its shards' addresses
    apart, so both give one order), by key where an address is unknown."""
    hub = _known_hub(parent.hub or "")
    remaining = [k for k in _list_order(group) if _is_group(group[k])]
    others = sorted(k for k in group.keys() if k not in remaining)
    if not hub.tracking:
        return _saved_order(group, remaining) + others
    names = {k: _vars_name(group[k]) for k in remaining}

    def named(key: str, pattern: str | None, public: str) -> bool:
        name = names[key]
        if name is None:
            return False
        if prefix and name.startswith(prefix) and pattern is None:
            name = name[len(prefix) :]
        return re.fullmatch(pattern, name) is not None if pattern is not None else name == public

    ordered: list[str] = []
    for attribute, pattern in hub.tracking:
        public = _public(attribute)
        members = hub.list_classes(attribute)
        if members:
            claimed = [
                k
                for k in remaining
                if set(classes_for_key(k, members)) & set(members)
                and (pattern is None or names[k] is None or named(k, pattern, public))
            ]
        elif hub.attribute_classes(attribute) or pattern is not None:
            claimed = [k for k in remaining if named(k, pattern, public)][:1]
        else:  # an attribute holding a layer the caller passed: a Task's backbone
            nested = parent.config.get(public)
            wanted = entry_name(nested) if isinstance(nested, Mapping) else None
            if wanted is not None:
                claimed = [k for k in remaining if names[k] == wanted][:1]
            else:  # a weights-only file: the nested model whose class ends with the attribute's name
                models = [k for k in remaining if any(_is_hub_model(c) for c in classes_for_key(k))]
                named_like = [k for k in models if re.sub(r"_\d+$", "", k).endswith(public)]
                claimed = named_like if len(named_like) == 1 else models if len(models) == 1 else []
        ordered.extend(claimed)
        taken = set(claimed)
        remaining = [k for k in remaining if k not in taken]
    # The graph's other layers (built into locals, not attributes: ViT's encoder, ResNet's convs)
    # follow in the saved list's order, which is the graph's.
    return ordered + _saved_order(group, remaining) + others


def _is_hub_model(class_id: str) -> bool:
    """A keras_hub Functional model (a Backbone, CLIP's encoders): it opens no name scope."""
    entry = hub_class(class_id)
    return entry is not None and not entry.scopes
