"""The ``decay-audit`` command: parses options, calls the library, maps outcomes to exit codes.

Exit codes: 0 ok, 1 findings, 2 usage or input error (one line on stderr, no traceback).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from decay_audit.errors import DecayAuditError, OptionError, UsageError
from decay_audit.kinds import KerasBackend, Preset
from decay_audit.loaders.interface import DEFAULT_LIMITS, Limits
from decay_audit.rules import TargetName

if TYPE_CHECKING:
    from decay_audit.results import VerifyReport
    from decay_audit.stages.verify import VerifyOptions

EXIT_OK, EXIT_FINDINGS, EXIT_INPUT = 0, 1, 2

_LIMIT_NAMES = {f.name.removeprefix("max_").replace("_", "-"): f.name for f in dataclasses.fields(Limits)}


def _fail(message: str) -> None:
    click.echo(f"decay-audit: error: {message}", err=True)
    sys.exit(EXIT_INPUT)


def _message(exc: DecayAuditError) -> str:
    """The library names parameters (``keras_backend``); a command-line user reads them as flags."""
    return f"{exc.flag}: {exc.problem}" if isinstance(exc, OptionError) else str(exc)


def _limits(values: tuple[str, ...]) -> Limits:
    changes = {}
    for value in values:
        name, _, number = value.partition("=")
        if name not in _LIMIT_NAMES or not number.isdigit():
            raise UsageError("--limit", f"expected NAME=N with NAME one of {', '.join(_LIMIT_NAMES)}, got {value!r}")
        changes[_LIMIT_NAMES[name]] = int(number)
    return dataclasses.replace(DEFAULT_LIMITS, **changes)


def _write_output(text: str, output: Path | None) -> None:
    """To stdout, or atomically to ``--output``: a failed run leaves no half-written report behind."""
    if output is None:
        click.echo(text, nl=False)
        return
    from decay_audit.files import write_atomically

    write_atomically(output, text, "--output")


class _Group(click.Group):
    """Turns every DecayAuditError, and click's own usage errors, into one stderr line and exit 2."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        try:
            result = super().main(
                args=args, prog_name=prog_name, complete_var=complete_var, standalone_mode=False, **extra
            )
        except click.exceptions.Abort:
            _fail("aborted")
        except click.ClickException as exc:
            context = f"{exc.ctx.command_path}: " if getattr(exc, "ctx", None) else ""
            _fail(f"{context}{exc.format_message()} (see --help)")
        if isinstance(result, int) and standalone_mode:
            sys.exit(result)
        return result

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DecayAuditError as exc:
            _fail(_message(exc))
        except click.exceptions.Exit:
            raise
        except KeyboardInterrupt:
            _fail("interrupted")


PRESETS = [preset.value for preset in Preset]
TARGETS = [target.value for target in TargetName]


def policy_options(command):
    """--preset, --decay, --no-decay, --policy: the same policy vocabulary on every command."""
    command = click.option(
        "--policy",
        "policy_file",
        type=click.Path(path_type=Path),
        help="Policy file (YAML or JSON): preset plus ordered overrides; see README.",
    )(command)
    command = click.option(
        "--no-decay",
        "no_decay",
        multiple=True,
        metavar="SELECTOR",
        help="Exclude what SELECTOR matches (kind:KIND, re:REGEX on the path, or a path glob). "
        "Wins over --decay where both match (reported as a conflict).",
    )(command)
    command = click.option(
        "--decay",
        "decay",
        multiple=True,
        metavar="SELECTOR",
        help="Decay what SELECTOR matches (kind:KIND, re:REGEX on the path, or a path glob).",
    )(command)
    command = click.option(
        "--preset",
        type=click.Choice(PRESETS),
        default="kernels-only",
        show_default=True,
        help="kernels-only: kernels only (minGPT). no-bias-norm: all but biases and norms "
        "(BERT, Model Garden, HF Trainer). ndim: ndim >= 2 (timm, nanoGPT). "
        "decay-all: every trainable variable (plain Keras weight_decay).",
    )(command)
    return command


def _policy(preset: str, decay: tuple[str, ...], no_decay: tuple[str, ...], policy_file: Path | None):
    from decay_audit.policy import build_policy, load_policy_file

    if policy_file is not None:
        if decay or no_decay:
            raise UsageError("--policy", "give overrides either in the policy file or as --decay/--no-decay, not both")
        return load_policy_file(policy_file)
    return build_policy(preset, decay=decay, no_decay=no_decay)


LIMIT_HELP = (
    "Raise a safety bound, NAME=N (repeatable). Names: "
    + ", ".join(_LIMIT_NAMES)
    + ". Bounds are checked against sizes the file declares, before reading."
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="decay-audit")
def main() -> None:
    """Audit which weights of a TensorFlow/Keras model get weight decay.

    Reads .keras, .h5 / .weights.h5 and SavedModel directories from their metadata:
    nothing in the model file is executed, and the file is never modified.
    Exit codes: 0 ok, 1 findings, 2 usage or input error.
    """


def _format_choices(*subjects: str) -> click.Choice:
    from decay_audit.report import formats_for

    choices: list[str] = []
    for subject in subjects:
        choices += [f for f in formats_for(subject) if f not in choices]
    return click.Choice(choices)


def _or_list(values) -> str:
    *first, last = list(values)
    return f"{', '.join(first)} or {last}" if first else last


def _show_progress(quiet: bool, output_format: str) -> bool:
    """Progress only for a person watching: on a TTY, not with --quiet, never beside machine-readable output."""
    from decay_audit.report import OutputFormat

    return not quiet and not OutputFormat(output_format).machine_readable and sys.stderr.isatty()


@main.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL...", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "output_format",
    type=_format_choices("scan", "scan-many"),
    default="table",
    show_default=True,
    help="Report format. Several models: table (one row per model), json (one report per model), sarif.",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the report to this file instead of stdout.",
)
@policy_options
@click.option("--limit", "limits", multiple=True, metavar="NAME=N", help=LIMIT_HELP)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 when any verdict is low-confidence or has conflicting evidence, or an override is dead.",
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(1, 256),
    default=None,
    help="Several models: readers at once (default: the CPUs this process may use).",
)
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also draw parameters decayed vs excluded per kind as a PNG (needs the [plot] extra).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar on stderr (errors and the --strict reason stay).")
def scan(
    models: tuple[Path, ...],
    output_format: str,
    output: Path | None,
    preset: str,
    decay,
    no_decay,
    policy_file,
    limits: tuple[str, ...],
    strict: bool,
    jobs: int | None,
    plot_file: Path | None,
    quiet: bool,
) -> None:
    """Classify every variable of MODEL and decide which get weight decay.

    MODEL is a .keras file, a legacy .h5 or .weights.h5, a SavedModel directory,
    or a directory that holds exactly one of these. Several MODELs, a directory
    holding several models (searched recursively) or a glob scan every model found,
    one summary row each.
    """
    from decay_audit.loaders.discover import single_model

    if plot_file is not None:
        from decay_audit.report.plot import require_matplotlib

        require_matplotlib(plot_file)
    single = single_model(models)
    if single is None:
        _scan_many(
            models,
            output_format,
            output,
            _policy(preset, decay, no_decay, policy_file),
            _limits(limits),
            strict,
            jobs,
            plot_file,
            quiet,
        )
        return
    from decay_audit.loaders import start_load

    pending = start_load(single, _limits(limits))  # the reader child works while the next stages import
    try:
        from decay_audit.report import Subject, render
        from decay_audit.stages.scan import scan_inventory

        policy = _policy(preset, decay, no_decay, policy_file)
    except BaseException:
        pending.cancel()
        raise
    report = scan_inventory(pending.result(), policy)
    _write_output(render(Subject.SCAN, output_format, report, model=single), output)
    if plot_file is not None:
        from decay_audit.report.plot import plot_scan

        plot_scan(report, plot_file)
    summary = report.summary()
    if strict and report.strict_problems():
        click.echo(
            f"decay-audit: {summary.low_confidence} low-confidence and {summary.conflicting} conflicting "
            f"verdicts, {len(report.policy_findings.dead_overrides)} dead overrides (--strict)",
            err=True,
        )
        sys.exit(EXIT_FINDINGS)


def _scan_many(
    models: tuple[Path, ...],
    output_format: str,
    output: Path | None,
    policy,
    limits: Limits,
    strict: bool,
    jobs: int | None,
    plot_file: Path | None,
    quiet: bool,
) -> None:
    from decay_audit.loaders.discover import discover
    from decay_audit.report import Subject, render
    from decay_audit.results import BatchReport
    from decay_audit.stages.scan_many import missing_items, scan_many

    discovered = discover(models)
    if not discovered.models and not discovered.missing:
        raise UsageError(", ".join(str(m) for m in models), "no model found")
    if plot_file is not None:
        raise UsageError("--plot", "draws one model; give one MODEL")
    if _show_progress(quiet, output_format) and discovered.models:
        with click.progressbar(
            length=len(discovered.models),
            label="scanning",
            file=sys.stderr,
            item_show_func=lambda item: item and item.path,
        ) as bar:
            batch = scan_many(discovered.models, policy, limits, jobs, on_done=lambda item: bar.update(1, item))
    else:
        batch = scan_many(discovered.models, policy, limits, jobs)
    batch = BatchReport(tuple(missing_items(discovered)) + batch.items)
    _write_output(render(Subject.SCAN_MANY, output_format, batch), output)
    totals = batch.totals()
    if totals.unreadable:
        for item in batch.errors:
            click.echo(f"decay-audit: error: {item.error}", err=True)
        sys.exit(EXIT_INPUT)
    if strict and totals.strict_problems:
        click.echo(
            f"decay-audit: {totals.strict_problems} low-confidence or conflicting verdicts or dead "
            f"overrides in {totals.models} models (--strict)",
            err=True,
        )
        sys.exit(EXIT_FINDINGS)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--target",
    required=True,
    type=click.Choice(TARGETS),
    help="The tool whose rule language to write (see README for each one's matching semantics).",
)
@policy_options
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the rule file here (YAML when it ends in .yaml/.yml, else JSON); default stdout.",
)
@click.option("--snippet", is_flag=True, help="Also print a ready-to-paste Python snippet that applies the rule.")
@click.option("--limit", "limits", multiple=True, metavar="NAME=N", help=LIMIT_HELP)
def rules(
    model: Path,
    target: str,
    preset: str,
    decay,
    no_decay,
    policy_file,
    output: Path | None,
    snippet: bool,
    limits: tuple[str, ...],
) -> None:
    """Write MODEL's exclusion rules in the language of a training tool.

    Before writing, the rule is applied to the model with the tool's own matching
    semantics; if it would select anything but the intended set, nothing is written
    and the command exits 1 naming the variables.
    """
    from decay_audit.stages.rules import emit_rules, serialise_rules
    from decay_audit.stages.scan import scan as run_scan

    report = run_scan(model, preset=_policy(preset, decay, no_decay, policy_file), limits=_limits(limits))
    emission = emit_rules(report, target)
    if not emission.ok:
        names = ", ".join((emission.unexpressible + emission.wrongly_selected)[:8])
        click.echo(
            f"decay-audit: the {target} rule cannot select exactly the intended set; wrong for: {names}. "
            "Use --target native or optax, which name every variable.",
            err=True,
        )
        sys.exit(EXIT_FINDINGS)
    _write_output(serialise_rules(emission.document, output), output)
    if snippet and emission.emitted.snippet:
        click.echo(emission.emitted.snippet_for(str(output) if output else "rules.json"), err=output is None)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--target",
    required=True,
    type=click.Choice(TARGETS),
    help="The tool whose matching semantics the rule is applied with.",
)
@click.option("--rules", "rules_file", type=click.Path(path_type=Path), help="The rule file to audit.")
@click.option(
    "--var-names",
    "var_names",
    multiple=True,
    metavar="PATTERN",
    help="Patterns as passed to the tool, instead of --rules: --var-names LayerNorm bias.",
)
@click.argument("more_patterns", nargs=-1, metavar="")
@policy_options
@click.option(
    "--keras-backend",
    type=click.Choice([backend.value for backend in KerasBackend]),
    default=None,
    help="For --target keras: the backend that trains (default $KERAS_BACKEND, else tensorflow). "
    "Keras 3 matches var_names against 'path:0' on TensorFlow but the leaf elsewhere.",
)
@click.option("--format", "output_format", type=_format_choices("check"), default="table", show_default=True)
@click.option("--limit", "limits", multiple=True, metavar="NAME=N", help=LIMIT_HELP)
def check(
    model: Path,
    target: str,
    rules_file: Path | None,
    var_names: tuple[str, ...],
    more_patterns,
    preset: str,
    decay,
    no_decay,
    policy_file,
    keras_backend,
    output_format: str,
    limits: tuple[str, ...],
) -> None:
    """Audit an existing exclusion rule against MODEL and the policy.

    Reports what each pattern matches, dead patterns, over-broad patterns, and
    variables decayed or excluded against the policy. Exit 1 on any finding.
    """
    from decay_audit.stages.rules import check_rules, read_rule
    from decay_audit.stages.scan import scan as run_scan

    if more_patterns and not var_names:
        raise UsageError("check", f"unexpected arguments {' '.join(more_patterns)!r}")
    rule = read_rule(target, rules_file, var_names + more_patterns, keras_backend)
    report = run_scan(model, preset=_policy(preset, decay, no_decay, policy_file), limits=_limits(limits))
    result = check_rules(report, target, rule, keras_backend)
    from decay_audit.report import Subject, render

    click.echo(render(Subject.CHECK, output_format, result, model=model, rules=rules_file), nl=False)
    if result.findings:
        sys.exit(EXIT_FINDINGS)


class _OrderedExpectations(click.Command):
    """Keeps --expect-decay / --expect-no-decay in command-line order, so later ones win."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ordered, index = [], 0
        while index < len(args):
            token = args[index]
            for flag, decay in (("--expect-decay", True), ("--expect-no-decay", False)):
                if token == flag and index + 1 < len(args):
                    ordered.append((decay, args[index + 1]))
                    index += 1
                elif token.startswith(flag + "="):
                    ordered.append((decay, token.split("=", 1)[1]))
            index += 1
        ctx.meta["ordered_expectations"] = ordered
        return super().parse_args(ctx, args)


@main.command(cls=_OrderedExpectations)
@click.argument("model", required=False, type=click.Path(path_type=Path))
@click.option(
    "--setup",
    "setup_spec",
    metavar="FILE.py:FUNCTION",
    help="Import FILE (your own code, named explicitly) and call FUNCTION(): it returns a compiled "
    "keras.Model, a (model, optimizer) pair, or a dict with model, optimizer and optionally "
    "train_step(model, optimizer, x, y) and data_loss(y_true, y_pred).",
)
@click.option(
    "--optimizer",
    metavar="NAME",
    help="With MODEL: the optimizer to verify (adamw, adam, sgd, lion, "
    "ftrl, ...). Without it, the optimizer saved in MODEL's compile config (what load_model gives).",
)
@click.option("--learning-rate", type=float, help="With --optimizer (default 1e-3).")
@click.option("--weight-decay", type=float, help="With --optimizer.")
@click.option(
    "--exclude-var-names",
    multiple=True,
    metavar="REGEX",
    help="Passed to optimizer.exclude_from_weight_decay(var_names=...) (repeatable).",
)
@click.option(
    "--custom-module",
    "custom_modules",
    multiple=True,
    metavar="MODULE",
    help="Import MODULE before rebuilding MODEL, for its custom classes. MODEL is rebuilt with "
    "safe_mode=True only: no Lambda bytecode, and no class from a module you did not name.",
)
@policy_options
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(path_type=Path),
    help="Intent from a native rule file (decay-audit rules --target native).",
)
@click.option(
    "--expect-decay",
    multiple=True,
    metavar="GLOB",
    expose_value=False,
    help="Variables (fnmatch on the path) that must decay.",
)
@click.option(
    "--expect-no-decay",
    multiple=True,
    metavar="GLOB",
    expose_value=False,
    help="Variables that must not decay. With --expect-decay, later ones win.",
)
@click.option(
    "--steps",
    type=click.IntRange(1, 1000),
    default=3,
    show_default=True,
    help="Probe steps (raised to twice the gradient-accumulation steps when needed).",
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "gpu"]),
    default=None,
    help="Where to run the probe (default: the GPU when TensorFlow sees one).",
)
@click.option(
    "--backend",
    "keras_backend",
    metavar="NAME",
    help=f"Keras 3 backend to probe on: {_or_list(b.value for b in KerasBackend if b.trains)} "
    "(default: KERAS_BACKEND, else tensorflow). "
    "The same exclusions can select different variables on different backends. "
    "tf_keras set-ups always run on TensorFlow.",
)
@click.option("--format", "output_format", type=_format_choices("verify"), default="table", show_default=True)
@click.option(
    "--junit", type=click.Path(path_type=Path, dir_okay=False), help="Also write JUnit XML, one test case per variable."
)
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also draw each variable's measured decay against lr_t*wd as a PNG (needs the [plot] extra).",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit 1 also when an intent rule (--decay, --no-decay, --expect-decay, --expect-no-decay) "
    "matches no variable.",
)
@click.option("--debug", is_flag=True, help="When the set-up cannot be probed, also print the traceback.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar on stderr (errors and the --strict reason stay).")
@click.pass_context
def verify(
    ctx: click.Context,
    model: Path | None,
    setup_spec: str | None,
    optimizer: str | None,
    learning_rate: float | None,
    weight_decay: float | None,
    exclude_var_names: tuple[str, ...],
    custom_modules: tuple[str, ...],
    preset: str,
    decay,
    no_decay,
    policy_file,
    rules_file: Path | None,
    steps: int,
    device: str | None,
    keras_backend: str | None,
    output_format: str,
    junit: Path | None,
    plot_file: Path | None,
    strict: bool,
    debug: bool,
    quiet: bool,
) -> None:
    """Measure, per variable, the decay a real training set-up applies; exit 1 where it differs from the intent.

    Runs a short probe on synthetic batches (or the set-up's own): at every step, from one
    snapshot of all model and optimizer state, the real step and its twin without decay; the
    difference is the decay each variable received. The model's weights are restored afterwards.
    Exit 1 only for measured mismatches (and, with --strict, dead intent rules); a set-up that
    cannot be probed exits 2 with one line naming the stage (import, make(), batch, step,
    measurement) and the cause.
    """
    import traceback
    import warnings

    from decay_audit.probe.setup import SetupError, Stage, describe_exception
    from decay_audit.stages.verify import VerifyOptions

    if plot_file is not None:  # before any work: a missing extra is a usage error, not a late surprise
        from decay_audit.report.plot import require_matplotlib

        require_matplotlib(plot_file)
    progress = _StepProgress(_show_progress(quiet, output_format))
    try:
        with warnings.catch_warnings(), progress:
            if not debug:  # Keras/TensorFlow warnings about the user's model are not verify's report
                import logging

                warnings.simplefilter("ignore")
                logging.getLogger("tensorflow").setLevel(logging.ERROR)
            options = VerifyOptions(
                steps=steps,
                rules=rules_file,
                device=device,
                backend=keras_backend,
                optimizer=optimizer,
                learning_rate=learning_rate,
                weight_decay=weight_decay,
                exclude_var_names=exclude_var_names,
                custom_modules=custom_modules,
                expectations=tuple(ctx.meta.get("ordered_expectations", ())),
                policy=_policy(preset, decay, no_decay, policy_file),
                on_step=progress.on_step,
            )
            report = _run_verify(model, setup_spec, options)
    except DecayAuditError as exc:
        if debug:
            traceback.print_exception(exc)
        _fail(f"{_message(exc)}{'' if debug or not isinstance(exc, SetupError) else ' (--debug shows the traceback)'}")
    except Exception as exc:  # noqa: BLE001 - a crash must never read as a finding (exit 1)
        if debug:
            traceback.print_exception(exc)
        subject = setup_spec or str(model)
        _fail(
            f"{SetupError(subject, describe_exception(exc), Stage.MEASUREMENT)}"
            f"{'' if debug else ' (--debug shows the traceback)'}"
        )
    from decay_audit.report import Subject, render
    from decay_audit.report.verify_format import format_junit

    click.echo(render(Subject.VERIFY, output_format, report, setup=setup_spec, model=model), nl=False)
    if junit is not None:
        _write_output(format_junit(report), junit)
    if plot_file is not None:
        from decay_audit.report.plot import plot_verify

        plot_verify(report, plot_file)
    if not report.ok:
        sys.exit(EXIT_FINDINGS)
    if strict and report.dead_selectors:
        click.echo(
            f"decay-audit: {len(report.dead_selectors)} intent rules match no variable: "
            f"{', '.join(report.dead_selectors)} (--strict)",
            err=True,
        )
        sys.exit(EXIT_FINDINGS)


def _run_verify(model: Path | None, setup_spec: str | None, options: VerifyOptions) -> VerifyReport:
    """The model file or the set-up, whichever was given."""
    if (model is None) == (setup_spec is None):
        raise UsageError("verify", "give exactly one of MODEL or --setup FILE.py:FUNCTION")
    from decay_audit.stages.verify import verify_model_file, verify_setup_file

    if model is not None:
        return verify_model_file(model, options)
    return verify_setup_file(str(setup_spec), options)


class _StepProgress:
    """verify's progress bar: opened at the first finished probe step, when the step count is known
    (gradient accumulation can raise it), and closed before any result or error line is printed."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: Any = None  # click's ProgressBar, opened at the first step

    def on_step(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="probing", file=sys.stderr, show_pos=True)
            self.bar.__enter__()
        self.bar.update(1)

    def __enter__(self) -> _StepProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


if __name__ == "__main__":  # pragma: no cover
    main()
