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
    OPTIMIZERS,
    SetupError,
    Stage,
    TrainingSetup,
    at_stage,
    load_setup,
    setup_from_object,
)
from decay_audit.probe.verdict import judge
from decay_audit.results import VerifyReport


@dataclass(frozen=True)
class VerifyOptions:
    """How to verify: the intent, the probe's size and place, and for a model file its optimizer."""

    steps: int = 3
    """Probe steps (raised to twice the gradient-accumulation steps when needed)."""
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
    if model is not None and not Path(model).exists():
        raise ModelLoadError(str(model), "no such file or directory")
    if options.optimizer is not None and options.optimizer.lower() not in OPTIMIZERS:
        raise OptionError("optimizer", f"unknown optimizer {options.optimizer!r} (one of {', '.join(OPTIMIZERS)})")
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
    with at_stage(Stage.MEASUREMENT, subject):
        intent = _intent(training, policy, Path(options.rules) if options.rules else None, options.expectations)
        _phase(options, "probe")
        run = run_probe(
            training,
            steps=options.steps,
            batch_size=options.batch_size,
            seed=options.seed,
            device=device_name,
            batches=batches,
            on_step=options.on_step,
        )
        measurements = judge(run, intent.expected, training)
    notes = []
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
        device=run.device,
        measurements=tuple(measurements),
        notes=tuple(notes),
        dead_selectors=intent.dead_selectors,
        backend=run.backend,
        decay_sources=tuple(s.label for s in run.sources),
    )


def _describe(setup: Any) -> str:
    model = setup.get("model") if isinstance(setup, dict) else setup[0] if isinstance(setup, tuple) and setup else setup
    return str(getattr(model, "name", None) or type(setup).__name__)


__all__ = ["Outcome", "SetupError", "Stage", "UsageError", "VerifyOptions", "VerifyReport", "verify"]
