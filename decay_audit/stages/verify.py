"""``verify``: the intent (policy, rule file, expectations) against the probe's measurements.

Everything the ``verify`` command can do is here, so the Python API verifies a model file,
a ``FILE.py:FUNCTION`` set-up or a live object exactly as the CLI does. The order of the
checks is part of the contract: cheap usage errors first, then the backend (before any Keras
import), then the model file's own reader (a corrupt or hostile file fails there, before
Keras sees it), and only then Keras.
"""

from __future__ import annotations

import ast
import difflib
import fnmatch
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from decay_audit.errors import ModelLoadError, OptionError, UsageError
from decay_audit.findings import Outcome
from decay_audit.kinds import Preset
from decay_audit.policy import Policy
from decay_audit.probe.setup import (
    SetupError,
    Stage,
    TrainingSetup,
    at_stage,
    load_setup,
    optimizer_name,
    setup_from_object,
)
from decay_audit.probe.verdict import judge
from decay_audit.results import VerifyReport


@dataclass(frozen=True)
class VerifyOptions:
    """How to verify: the intent, the probe's size and place, and for a model file its optimizer."""

    steps: int = 3
    """Probe steps (raised to twice the gradient-accumulation steps when needed, with a note in the report)."""
    count_l1: bool = False
    """Judge L1 penalties (Ftrl ``l1_regularization_strength``, ``keras.regularizers.L1``, the L1 part of
    ``L1L2``) as coupled decay; by default they are sparsity, reported in their own ``l1`` column."""
    policy: Policy | Preset | str = Preset.KERNELS_ONLY
    """The intent: a preset name or a full policy with overrides."""
    rules: Path | None = None
    """A native rule file whose decisions replace the policy's."""
    expectations: tuple[tuple[bool, str], ...] = ()
    """(decay, glob on the path) pairs applied after the policy; later ones win."""
    device: str | None = None
    """``cpu`` or ``gpu``; None runs where the backend puts it (the GPU when one is visible)."""
    backend: str | None = None
    """The Keras 3 backend to probe on (default: ``KERAS_BACKEND``, else tensorflow)."""
    batch_size: int = 4
    seed: int = 0
    optimizer: str | None = None
    """Model files only: the optimizer to verify by name; None takes the file's compile config."""
    learning_rate: float | None = None
    """Model files only, with ``optimizer`` (default 1e-3)."""
    weight_decay: float | None = None
    """Model files only, with ``optimizer``."""
    exclude_var_names: tuple[str, ...] = ()
    """Model files only: passed to ``optimizer.exclude_from_weight_decay(var_names=...)``."""
    custom_modules: tuple[str, ...] = ()
    """Model files only: modules imported first, for the model's custom classes (safe_mode stays on)."""
    on_step: Callable[[int, int], None] | None = field(default=None, compare=False, repr=False)
    """Called as ``on_step(done, total)`` after each probe step (the CLI's progress bar)."""
    on_phase: Callable[[str], None] | None = field(default=None, compare=False, repr=False)
    """Called with each phase's name as it starts: ``import`` (Keras on its backend), ``build`` (the
    set-up file and its function, or the model file rebuilt), ``trace`` (the model called and read),
    ``probe`` (the twin steps). Minutes can pass before the first probe step; this says where."""


PHASES = ("import", "build", "trace", "probe")


def verify(
    setup: Any,
    options: VerifyOptions | None = None,
    *,
    preset: Policy | Preset | str | None = None,
    expect_decay: Sequence[str] = (),
    expect_no_decay: Sequence[str] = (),
    ordered_expectations: Sequence[tuple[bool, str]] = (),
    **option_values: Any,
) -> VerifyReport:
    """Measure what the set-up's optimizer and loss do to every trainable variable.

    ``setup``: a compiled keras.Model, a (model, optimizer) pair, a mapping with ``model``,
    ``optimizer`` and optionally ``optimizers``, ``train_step``, ``data_loss`` and the set-up's own
    ``batch`` / ``dataset``, ``"file.py:make"``, a zero-argument factory returning any of those
    (``train.make``: its errors are stage make(), as FILE.py:FUNCTION's), or a model file
    (``.keras``, ``.h5``) which is rebuilt with ``safe_mode=True`` and paired with
    ``options.optimizer`` or its saved optimizer. A set-up that cannot be probed raises
    :class:`SetupError` whose ``stage`` says where (import, make(), batch, step, measurement): a
    crash is never returned as a mismatch.

    ``options`` holds every setting; keywords named like its fields override it. ``preset`` is
    ``options.policy``; ``expect_decay`` globs apply before ``expect_no_decay``, and
    ``ordered_expectations`` ((decay, glob) pairs, later ones winning) replaces both when given.
    The model's weights and optimizer state are restored afterwards.
    """
    options = replace(options or VerifyOptions(), **option_values)
    if preset is not None:
        options = replace(options, policy=preset)
    if ordered_expectations or expect_decay or expect_no_decay:
        options = replace(
            options,
            expectations=tuple(ordered_expectations)
            or tuple([(True, g) for g in expect_decay] + [(False, g) for g in expect_no_decay]),
        )
    if _is_setup_spec(setup):
        precheck(None, str(setup), options)
        if options.backend is not None:  # else Keras stays on whatever backend this process already runs
            _phase(options, "import")
            _select_backend(options)
        _phase(options, "build")
        return _verify(load_setup(str(setup)), options)
    if isinstance(setup, (str, Path)):
        return verify_model_file(Path(setup), options)
    if _is_factory(setup):  # train.make: called as FILE.py:FUNCTION's function is, with the same stages
        name = _factory_name(setup)
        with at_stage(Stage.MAKE, name):
            made = setup()
        return _verify(setup_from_object(made, name), options)
    return _verify(setup_from_object(setup, _describe(setup)), options)


def verify_setup_file(spec: str, options: VerifyOptions) -> VerifyReport:
    """``FILE.py:FUNCTION`` as the CLI runs it: Keras imported on the chosen backend, then the file."""
    precheck(None, spec, options)
    _phase(options, "import")
    _select_backend(options)
    _phase(options, "build")
    return _verify(load_setup(spec), options)


def verify_model_file(path: Path, options: VerifyOptions) -> VerifyReport:
    """A model file: read by decay-audit's own bounded reader first, then rebuilt by Keras in safe mode."""
    precheck(path, None, options)
    _phase(options, "import")
    _select_backend(options)
    from decay_audit.loaders import load as load_inventory
    from decay_audit.probe.setup import setup_from_model_file

    load_inventory(path)  # a corrupt or hostile file fails here, before Keras sees it
    _quiet_devices()  # no set-up of the user's to place devices first: initialise them now, silenced
    _phase(options, "build")
    training = setup_from_model_file(
        path,
        options.optimizer,
        options.learning_rate,
        options.weight_decay,
        options.exclude_var_names,
        options.custom_modules,
    )
    return _verify(training, options)


def _phase(options: VerifyOptions, name: str) -> None:
    if options.on_phase is not None:
        options.on_phase(name)


# --- cheap checks: every mistake found before Keras is imported -----------------------------------


def precheck(model: str | os.PathLike[str] | None, setup: str | None, options: VerifyOptions) -> None:
    """Fail in well under a second on the mistakes that need no Keras: importing TensorFlow alone
    takes seconds to tens of seconds, and a typo should not cost that. Checks, in order: exactly one
    of MODEL and the set-up, the ``FILE.py:FUNCTION`` form, the backend name (and that its framework is
    installed), options that do not apply, the set-up file and its function (read with ``ast``, never
    imported), the model path, the optimizer name, the device, the preset and the rule file."""
    if (model is None) == (setup is None):
        raise UsageError("verify", "give exactly one of MODEL or --setup FILE.py:FUNCTION")
    path_text, function = _split_spec(setup) if setup is not None else ("", "")
    from decay_audit.probe.backends.select import trainable_backend

    trainable_backend(options.backend)
    if setup is not None and (options.optimizer or options.custom_modules):
        raise OptionError("setup", "--optimizer and --custom-module apply to MODEL, not to --setup")
    if setup is not None:
        _check_function(Path(path_text), function)
        _refuse_several_processes(setup)
    if model is not None and not Path(model).exists():
        raise ModelLoadError(str(model), "no such file or directory")
    if options.optimizer is not None:
        optimizer_name(options.optimizer)
    if options.device not in (None, "cpu", "gpu"):
        raise OptionError("device", f"expected cpu or gpu, got {options.device!r}")
    if isinstance(options.policy, str) and options.policy not in {p.value for p in Preset}:
        names = [p.value for p in Preset]
        raise OptionError("preset", f"unknown preset {options.policy!r} (one of {', '.join(names)})")
    if options.rules is not None:
        rules = Path(options.rules)
        if not rules.is_file():
            raise UsageError(str(rules), "no such file")
        if not os.access(rules, os.R_OK):
            raise UsageError(str(rules), "not readable")


def _refuse_several_processes(setup: str) -> None:
    """A cluster in the environment (``TF_CONFIG`` naming several tasks, for MultiWorkerMirroredStrategy
    or ParameterServerStrategy; ``JAX_NUM_PROCESSES`` above 1, for ``jax.distributed``): the set-up would
    wait at import for workers that verify does not start, so it is refused before it is imported."""
    import json

    try:
        cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster") or {}
        tasks = sum(len(v) for v in cluster.values() if isinstance(v, (list, dict))) if isinstance(cluster, dict) else 0
    except (ValueError, AttributeError):
        tasks = 0
    if tasks > 1:
        raise UsageError(
            setup,
            f"TF_CONFIG names a cluster of {tasks} tasks and verify probes one process: unset TF_CONFIG and "
            "verify the same set-up under tf.distribute.MirroredStrategy on this machine's devices (which "
            "variables decay does not depend on the number of workers)",
        )
    processes = os.environ.get("JAX_NUM_PROCESSES", "1")
    if processes.isdigit() and int(processes) > 1:
        raise UsageError(
            setup,
            f"JAX_NUM_PROCESSES={processes}: jax.distributed runs several processes and verify probes one: "
            "verify the same set-up in one process on this host's devices (keras.distribution.DataParallel)",
        )


def _split_spec(spec: str) -> tuple[str, str]:
    path_text, colon, function = spec.rpartition(":")
    if not colon or not path_text or not function.isidentifier():
        path = Path(spec if not colon else path_text or spec)
        names = _top_level_functions(path) if path.is_file() else []
        hint = f" (did you mean {f'{spec}:{names[0]}'!r}?)" if len(names) == 1 else ""
        if len(names) > 1:
            hint = f" (functions in {path}: {', '.join(names[:8])})"
        raise OptionError("setup", f"expected FILE.py:FUNCTION, got {spec!r}{hint}")
    return path_text, function


def _parse(path: Path) -> ast.Module | None:
    """The file's syntax tree; None when it cannot be read as Python (the import will say why)."""
    try:
        return ast.parse(path.read_bytes(), filename=str(path))
    except (OSError, ValueError, SyntaxError):
        return None


def _top_level_functions(path: Path) -> list[str]:
    """The module-level functions callable without arguments: what FUNCTION can name."""
    tree = _parse(path)
    if tree is None:
        return []
    return [
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and len(node.args.posonlyargs) + len(node.args.args) <= len(node.args.defaults)
        and all(default is not None for default in node.args.kw_defaults)
    ]


def _check_function(path: Path, function: str) -> None:
    """The set-up file exists, parses, and binds ``function`` at module level. Only a certain absence
    is an error: a star import, a module ``__getattr__`` or ``globals()``/``exec`` could bind any name."""
    if not path.is_file():
        raise UsageError(str(path), "no such file")
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as exc:
        raise SetupError(str(path), f"syntax error line {exc.lineno}: {exc.msg}", Stage.IMPORT) from None
    except (OSError, ValueError):
        return  # unreadable or null bytes: the import reports it with its own words
    names = _module_names(tree)
    if names is None or function in names:
        return
    close = difflib.get_close_matches(function, sorted(names), n=1)
    raise UsageError(str(path), f"has no function {function!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))


_DYNAMIC_CALLS = frozenset({"globals", "exec", "setattr", "vars", "__import__"})


def _module_names(tree: ast.Module) -> set[str] | None:
    """Every name the module binds at its top level (inside if/try/with/for too), or None when
    the module could bind names ``ast`` cannot see, or raises while importing."""
    names: set[str] = set()

    def targets(node: ast.AST) -> None:
        for sub in ast.walk(node):
            if isinstance(sub, ast.Name):
                names.add(sub.id)

    def visit(statements: Sequence[ast.stmt]) -> bool:
        for node in statements:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
                continue
            if isinstance(node, ast.ImportFrom) and any(alias.name == "*" for alias in node.names):
                return False
            if isinstance(node, ast.Raise):  # the import may stop here: its own error says more
                return False
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    targets(target)
            elif isinstance(node, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
                targets(node.target)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                for item in node.items:
                    if item.optional_vars is not None:
                        targets(item.optional_vars)
            for child in ("body", "orelse", "finalbody"):
                if not visit(getattr(node, child, [])):
                    return False
            for handler in getattr(node, "handlers", []):
                if handler.name:
                    names.add(handler.name)
                if not visit(handler.body):
                    return False
            for case in getattr(node, "cases", []):
                if not visit(case.body):
                    return False
        return True

    if not visit(tree.body) or "__getattr__" in names:
        return None
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            names.update(node.names)
        elif isinstance(node, ast.NamedExpr):
            targets(node.target)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _DYNAMIC_CALLS:
            return None
    return names


def _select_backend(options: VerifyOptions) -> None:
    """Before any Keras import: the backend is fixed when Keras is first imported, and its start-up
    chatter is not part of the report."""
    from decay_audit.probe.backends.select import choose_backend, import_keras

    import_keras(choose_backend(options.backend))


def _quiet_devices() -> None:
    """TensorFlow's devices initialised with their start-up notices silenced, once the set-up has been
    imported and built: a set-up may configure devices itself (two logical CPUs for MirroredStrategy),
    which TensorFlow refuses once they are initialised. Only on the TensorFlow backend: under JAX or
    torch, initialising TensorFlow's devices would only take memory (a whole GPU's, by default)."""
    import sys

    keras = sys.modules.get("keras")
    if keras is not None and hasattr(keras, "backend") and keras.backend.backend() == "tensorflow":
        from decay_audit.quiet_tensorflow import initialise_devices

        initialise_devices()


def _is_setup_spec(setup: Any) -> bool:
    return isinstance(setup, str) and ":" in setup and setup.split(":")[0].endswith(".py")


def _is_factory(setup: Any) -> bool:
    """A zero-argument factory (``train.make``, a lambda, a partial): callable, but not a model (a
    Keras model is callable too) and not one of the set-up shapes."""
    if not callable(setup) or isinstance(setup, (type, TrainingSetup)):
        return False
    return not hasattr(setup, "trainable_variables")


def _factory_name(factory: Any) -> str:
    """``train.make`` for the report and for a SetupError's subject."""
    name = getattr(factory, "__qualname__", None) or getattr(factory, "__name__", None) or type(factory).__name__
    module = getattr(factory, "__module__", None)
    return f"{module}.{name}" if module and module != "__main__" else str(name)


@dataclass(frozen=True)
class Intent:
    """What each trainable variable should receive, and which rule said so."""

    expected: dict[str, tuple[bool, str]]
    """path -> (decay expected, the rule that decided it: preset and kind, an override, a rule file, a glob)."""
    dead_selectors: tuple[str, ...]
    """Rules that matched no variable."""


def _intent(
    setup: TrainingSetup, policy: Policy, rules: Path | None, expectations: Sequence[tuple[bool, str]]
) -> Intent:
    from decay_audit.loaders.live import load_live
    from decay_audit.stages.scan import scan_inventory

    report = scan_inventory(load_live(setup.model), policy)
    intent = {v.record.path: (v.decision.decay, v.decision.reason) for v in report.variables}
    dead = list(report.policy_findings.dead_overrides)
    if rules is not None:
        from decay_audit.files import read_structured
        from decay_audit.rules import get_target

        native = get_target("native")
        document = native.parse(read_structured(rules), str(rules))
        native.apply(document, [v.record for v in report.variables])  # raises on a fingerprint mismatch
        intent = {v["path"]: (bool(v["decay"]), f"rule file {rules}") for v in document["variables"]}
    for decay, pattern in expectations:  # later ones win
        rule = f"--expect-{'decay' if decay else 'no-decay'} {pattern}"
        matched = False
        for path in intent:
            if fnmatch.fnmatchcase(path, pattern):
                intent[path] = (decay, rule)
                matched = True
        if not matched:
            dead.append(rule)
    return Intent(intent, tuple(dict.fromkeys(dead)))


def _verify(training: TrainingSetup, options: VerifyOptions) -> VerifyReport:
    import numpy as np

    from decay_audit.probe.data import BatchSource
    from decay_audit.probe.twin import run_probe

    policy = options.policy if isinstance(options.policy, Policy) else Policy(Preset(options.policy))
    device = options.device
    if device not in (None, "cpu", "gpu"):
        raise OptionError("device", f"expected cpu or gpu, got {device!r}")
    device_name = {"cpu": "CPU", "gpu": "GPU", None: None}[device]
    _quiet_devices()
    if device_name == "GPU":
        from decay_audit.probe.backends.select import gpu_visible

        if not gpu_visible():
            raise OptionError("device", "gpu requested but the backend sees no GPU")
    subject = training.description or str(getattr(training.model, "name", "model"))
    _phase(options, "trace")
    batches = BatchSource(training, options.batch_size, np.random.default_rng(options.seed))
    weights = getattr(training.model, "weights", None)
    if getattr(training.model, "built", True) is False or (weights is not None and not weights):
        x, _ = batches.peek()  # a subclassed model never called: build it the way training would
        with at_stage(Stage.STEP, subject):
            training.model(x, training=False)
    from decay_audit.probe.backends import backend_for

    backend = backend_for(training)
    refusal = backend.refuse(training)
    if refusal is not None:
        raise SetupError(subject, refusal, Stage.MEASUREMENT)
    placement = backend.placement(training)
    stale = _stale_step(training)
    with at_stage(Stage.MEASUREMENT, subject), _as_traced(training, stale):
        intent = _intent(training, policy, Path(options.rules) if options.rules else None, options.expectations)
        _phase(options, "probe")
        run = run_probe(
            training,
            steps=options.steps,
            batch_size=options.batch_size,
            seed=options.seed,
            device=device_name,
            backend=backend,
            batches=batches,
            on_step=options.on_step,
        )
        _check_knobs_reach_the_step(run, training, subject)
        measurements = judge(run, intent.expected, training, count_l1=options.count_l1)
    notes = []
    if stale is not None:
        measurements = _mark_stale(measurements, stale)
        notes.append(_stale_note(stale))
    disagreements = backend.replica_disagreements()
    if disagreements:
        measurements = _mark_disagreeing(measurements, disagreements)
    if placement is not None:
        notes.append(f"probed on {placement}: each replica's value read and compared after every step and twin")
    if not run.sources and not any(m.coupled_steps for m in measurements):
        notes.append("the optimizer has no weight_decay and no penalty reached any variable: nothing is decayed")
    notes.extend(run.notes)
    if training.batch is not None:
        notes.append("batches: the set-up's own")
    return VerifyReport(
        setup=subject,
        optimizer=run.optimizer_name,
        weight_decay=run.weight_decay,
        steps=len(run.steps),
        device=placement or run.device,
        measurements=tuple(measurements),
        notes=tuple(notes),
        dead_selectors=intent.dead_selectors,
        backend=run.backend,
        decay_sources=tuple(s.label for s in run.sources),
        probed_steps=run.probed,
        count_l1=options.count_l1,
    )


# --- what the step fit runs next, and knobs the step never reads -----------------------------------


def _stale_step(training: TrainingSetup) -> Any:
    """The Keras 3 TensorFlow model's cached ``train_function`` when it was traced while layers now
    frozen were trainable (None otherwise, and on other backends: the JAX trainer passes the current
    trainable variables into its jitted step on every ``fit`` call, and torch runs eagerly)."""
    if training.train_step is not None:
        return None
    import sys

    keras = sys.modules.get("keras")
    if keras is None or not isinstance(training.model, keras.Model):
        return None
    if keras.backend.backend() == "jax":
        _jax_optimizer_built_on_other_variables(training)
    if keras.backend.backend() != "tensorflow":
        return None
    from decay_audit.probe.backends.tensorflow import stale_train_step

    return stale_train_step(training.model)


def _jax_optimizer_built_on_other_variables(training: TrainingSetup) -> None:
    """On JAX, ``fit`` after ``layer.trainable = False`` raises (Keras 3.15: the built optimizer's state no
    longer matches the trainable variables, even after ``compile()`` with the same optimizer); verify's
    step would raise the same, so it says why in one line, with the fix."""
    model, optimizer = training.model, training.optimizer
    if optimizer is not getattr(model, "optimizer", None) or not getattr(optimizer, "built", False):
        return
    built_on = getattr(optimizer, "_trainable_variables", None)
    if built_on is None or len(built_on) == len(model.trainable_variables):
        return
    raise SetupError(
        training.description or str(getattr(model, "name", "model")),
        f"the optimizer was built on {len(built_on)} variables and the model now trains "
        f"{len(model.trainable_variables)} (layers frozen or unfrozen after it was built): fit fails the same "
        "way on JAX, even after compile() with the same optimizer; compile() with a new optimizer",
        Stage.STEP,
    )


def _as_traced(training: TrainingSetup, stale: Any) -> Any:
    """The layers' trainability as when the stale step was traced, for the probe (else nothing)."""
    import contextlib

    if stale is None:
        return contextlib.nullcontext()
    from decay_audit.probe.backends.tensorflow import trainability_as_traced

    return trainability_as_traced(training.model, stale)


def _stale_fix(stale: Any) -> str:
    names = ", ".join(stale.layers)
    layer, was = ("layer", "was") if len(stale.layers) == 1 else ("layers", "were")
    return f"fit reuses a step traced before {layer} {names} {was} frozen; call compile() again"


def _mark_stale(measurements: Sequence[Any], stale: Any) -> list[Any]:
    """Each frozen variable the stale step updates is a finding of its own, whatever its decay."""
    marked = []
    for measurement in measurements:
        if measurement.path in stale.variables:
            decayed = "decayed and updated" if measurement.decoupled_steps or measurement.coupled_steps else "updated"
            measurement = replace(
                measurement,
                outcome=Outcome.STALE_STEP,
                detail=f"frozen, but {decayed} by the step fit runs next",
                hint=_stale_fix(stale),
            )
        marked.append(measurement)
    return marked


def _stale_note(stale: Any) -> str:
    trainable_paths = [p for p in stale.variables if not p.endswith(("moving_mean", "moving_variance"))]
    statistics = [p for p in stale.variables if p not in trainable_paths]
    text = f"{_stale_fix(stale)}: the traced step still updates {', '.join(trainable_paths)}"
    if statistics:
        text += f" and the statistics {', '.join(statistics)}"
    return text + "; probed as fit would run it"


def _mark_disagreeing(measurements: Sequence[Any], disagreements: dict[str, float]) -> list[Any]:
    """A variable whose replicas hold different values is a finding whatever its decay: the replicas
    train different models from then on."""
    return [
        replace(
            m,
            outcome=Outcome.REPLICAS_DISAGREE,
            detail=f"its replicas differ by up to {disagreements[m.path]:.3g} after a step; {m.detail}",
        )
        if m.path in disagreements
        else m
        for m in measurements
    ]


def _would_decay(optimizer: Any, model: Any, knob: str) -> bool:
    """Whether the optimizer's own exclusions leave some trainable variable decayed by ``knob`` (Keras 3
    ``_use_weight_decay``, asked with the Keras variable and, on TensorFlow, its ``tf.Variable``, whose
    name ``var_names`` are searched in: both must say yes; Muon's ``_should_use_adamw`` routes each
    variable to ``adam_weight_decay`` or ``weight_decay``, keras/src/optimizers/muon.py, Keras 3.15)."""
    use = getattr(optimizer, "_use_weight_decay", None)
    if use is None:
        return True
    routed = getattr(optimizer, "_should_use_adamw", None)
    owned = list(getattr(optimizer, "_trainable_variables", None) or [])  # what it was built on
    for variable in owned or getattr(model, "trainable_variables", []):
        try:
            forms = [variable] + ([variable.value] if hasattr(getattr(variable, "value", None), "name") else [])
            if routed is not None and bool(routed(variable)) != (knob == "adam_weight_decay"):
                continue
            if all(use(form) for form in forms):
                return True
        except Exception:  # noqa: BLE001 - private Keras methods: when they cannot answer, assume no decay
            return False
    return False


def _check_knobs_reach_the_step(run: Any, training: TrainingSetup, subject: str) -> None:
    """A decoupled knob that is non-zero, decays some variable by the optimizer's own exclusions, and
    yet changes nothing bit for bit in any twin at a non-zero rate is not a runtime value of the step
    (a ``jax.jit`` or ``tf.function`` traced before verify with the knob as a constant): no verdict
    can be drawn from such twins, so verify says so instead of reporting "never switched on"."""
    from decay_audit.probe.backends import SourceKind

    if not any(getattr(step, "updated", True) for step in getattr(run, "probed", ()) or ((),)):
        return
    for index, source in enumerate(run.sources):
        if source.kind is not SourceKind.DECOUPLED or not source.value:
            continue
        effects = [e for step in run.steps for delta in step for e in delta.effects if e.source == index]
        if not any(e.rate > 0 for e in effects) or any(e.present or e.shrink != 0.0 for e in effects):
            continue
        if source.optimizer is None or not _would_decay(source.optimizer, training.model, source.knob):
            continue
        step = training.train_step
        name = getattr(step, "__name__", None) or type(step).__name__ if step is not None else "Keras' train_step"
        raise SetupError(
            subject,
            f"{source.label} is not a runtime value of the step {name}: every twin with it switched off or "
            "scaled equals the real step bit for bit (the step was compiled with it as a constant, e.g. a "
            "jax.jit or tf.function traced before verify); give verify the undecorated step",
            Stage.MEASUREMENT,
        )


def _describe(setup: Any) -> str:
    model = setup.get("model") if isinstance(setup, dict) else setup[0] if isinstance(setup, tuple) and setup else setup
    return str(getattr(model, "name", None) or type(setup).__name__)


__all__ = ["Outcome", "SetupError", "Stage", "UsageError", "VerifyOptions", "VerifyReport", "verify"]
