"""``verify``: the intent (policy, rule file, expectations) against the probe's measurements.

Everything the ``verify`` command can do is here, so the Python API verifies a model file,
a ``FILE.py:FUNCTION`` set-up or a live object exactly as the CLI does. The order of the
checks is part of the contract: cheap usage errors first, then the backend (before any Keras
import), then the model file's own reader (a corrupt or hostile file fails there, before
Keras sees it), and only then Keras.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from decay_audit.errors import OptionError, UsageError
from decay_audit.findings import Outcome
from decay_audit.kinds import Preset
from decay_audit.policy import Policy
from decay_audit.probe.setup import SetupError, Stage, TrainingSetup, at_stage, load_setup, setup_from_object
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
    ``batch`` / ``dataset``, ``"file.py:make"``, or a model file (``.keras``, ``.h5``) which is rebuilt
    with ``safe_mode=True`` and paired with ``options.optimizer`` or its saved optimizer. A set-up
    that cannot be probed raises :class:`SetupError` whose ``stage`` says where (import, make(),
    batch, step, measurement): a crash is never returned as a mismatch.

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
        if options.backend is not None:  # else Keras stays on whatever backend this process already runs
            _select_backend(options)
        return _verify(load_setup(str(setup)), options)
    if isinstance(setup, (str, Path)):
        return verify_model_file(Path(setup), options)
    return _verify(setup_from_object(setup, _describe(setup)), options)


def verify_setup_file(spec: str, options: VerifyOptions) -> VerifyReport:
    """``FILE.py:FUNCTION`` as the CLI runs it: Keras imported on the chosen backend, then the file."""
    _select_backend(options)
    if options.optimizer or options.custom_modules:
        raise OptionError("setup", "--optimizer and --custom-module apply to MODEL, not to --setup")
    return _verify(load_setup(spec), options)


def verify_model_file(path: Path, options: VerifyOptions) -> VerifyReport:
    """A model file: read by decay-audit's own bounded reader first, then rebuilt by Keras in safe mode."""
    _select_backend(options)
    from decay_audit.loaders import load as load_inventory
    from decay_audit.probe.setup import setup_from_model_file

    load_inventory(path)  # a corrupt or hostile file fails here, before Keras sees it
    training = setup_from_model_file(
        path,
        options.optimizer,
        options.learning_rate,
        options.weight_decay,
        options.exclude_var_names,
        options.custom_modules,
    )
    return _verify(training, options)


def _select_backend(options: VerifyOptions) -> None:
    """Before any Keras import: the backend is fixed when Keras is first imported, and its start-up
    chatter is not part of the report."""
    from decay_audit.probe.backends.select import choose_backend, import_keras

    import_keras(choose_backend(options.backend))


def _is_setup_spec(setup: Any) -> bool:
    return isinstance(setup, str) and ":" in setup and setup.split(":")[0].endswith(".py")


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
    batches = BatchSource(training, options.batch_size, np.random.default_rng(options.seed))
    weights = getattr(training.model, "weights", None)
    if getattr(training.model, "built", True) is False or (weights is not None and not weights):
        x, _ = batches.peek()  # a subclassed model never called: build it the way training would
        with at_stage(Stage.STEP, subject):
            training.model(x, training=False)
    with at_stage(Stage.MEASUREMENT, subject):
        intent = _intent(training, policy, Path(options.rules) if options.rules else None, options.expectations)
        run = run_probe(
            training,
            steps=options.steps,
            batch_size=options.batch_size,
            seed=options.seed,
            device=device_name,
            batches=batches,
            on_step=options.on_step,
        )
        measurements = judge(run, intent.expected)
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
