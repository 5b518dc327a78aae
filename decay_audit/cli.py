"""The ``decay-audit`` command: parses options, calls the library, maps outcomes to exit codes.

Exit codes: 0 ok, 1 findings, 2 usage or input error (one line on stderr, no traceback).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from decay_audit.config import LIMIT_NAMES, ColorChoice, Effective, merge
from decay_audit.errors import DecayAuditError, OptionError, UsageError
from decay_audit.kinds import KerasBackend, Preset, TargetName

if TYPE_CHECKING:
    from decay_audit.baseline import Baseline
    from decay_audit.results import VerifyReport
    from decay_audit.stages.verify import VerifyOptions

EXIT_OK, EXIT_FINDINGS, EXIT_INPUT = 0, 1, 2


def _fail(message: str) -> None:
    click.echo(f"decay-audit: error: {message}", err=True)
    sys.exit(EXIT_INPUT)


def _message(exc: DecayAuditError) -> str:
    """The library names parameters (``keras_backend``); a command-line user reads them as flags."""
    return f"{exc.flag}: {exc.problem}" if isinstance(exc, OptionError) else str(exc)


def _write_output(text: str, output: Path | None) -> None:
    """To stdout, or atomically to ``--output``: a failed run leaves no half-written report behind."""
    if output is None:
        # color=True: never strip escape codes. Reports hold them only when --color asked for them
        # (names from a model file are escaped), and click would strip them from a pipe.
        click.echo(text, nl=False, color=True)
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
        default=None,
        help="kernels-only: kernels only (minGPT). no-bias-norm: all but biases and norms "
        "(BERT, Model Garden, HF Trainer). ndim: ndim >= 2 (timm, nanoGPT). "
        "decay-all: every trainable variable (plain Keras weight_decay). "
        "Default: preset in [tool.decay-audit] of pyproject.toml, else kernels-only.",
    )(command)
    return command


def _policy(settings: Effective):
    from decay_audit.policy import build_policy, load_policy_file

    if settings.policy_file is not None:
        if settings.decay or settings.no_decay:
            raise UsageError("--policy", "give overrides either in the policy file or as --decay/--no-decay, not both")
        return load_policy_file(settings.policy_file)
    return build_policy(settings.preset, decay=settings.decay, no_decay=settings.no_decay)


_SETTINGS = {
    "preset": "preset",
    "decay": "decay",
    "no_decay": "no_decay",
    "policy_file": "policy_file",
    "limits": "limits",
    "baseline_file": "baseline",
    "no_baseline": "no_baseline",
    "strict": "strict",
}
"""Command parameter → the setting it gives; each command has the ones its options define."""


def with_settings(**fixed: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Hands the command one ``settings``: its policy, limit, baseline and --strict options over
    ``[tool.decay-audit]`` (found from the current directory) over the defaults. ``fixed`` are
    settings the command always has (verify takes no baseline). Goes under the click options."""

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(command)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            from decay_audit.config import load_settings

            given = {setting: kwargs.pop(name) for name, setting in _SETTINGS.items() if name in kwargs}
            return command(*args, settings=merge(load_settings(), **given, **fixed), **kwargs)

        return wrapper

    return decorate


LIMIT_HELP = (
    "Raise a safety bound, NAME=N (repeatable). Names: "
    + ", ".join(LIMIT_NAMES)
    + ". Bounds are checked against sizes the file declares, before reading."
)


def common_options(*subjects: str, default_format: str | None = "table", format_help: str = "Report format."):
    """--format, -o/--output, -q/--quiet, --strict/--no-strict, --exit-zero: one meaning on every command."""

    def decorate(command):
        command = click.option(
            "--exit-zero",
            is_flag=True,
            help="Exit 0 even when there are findings (usage and input errors still exit 2).",
        )(command)
        command = click.option(
            "--strict/--no-strict",
            default=None,
            help="Also exit 1 on uncertain verdicts (low-confidence, conflicting evidence) and on overrides or "
            "intent rules that match nothing. Default: strict in [tool.decay-audit], else off.",
        )(command)
        command = click.option(
            "--quiet",
            "-q",
            is_flag=True,
            help="Nothing on stderr but errors and the --strict reason: no progress, no notes.",
        )(command)
        command = click.option(
            "--output",
            "-o",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Write to this file (atomically, with your umask) instead of stdout.",
        )(command)
        command = click.option(
            "--format",
            "output_format",
            type=_format_choices(*subjects) if subjects else click.Choice(["json", "yaml"]),
            default=default_format,
            show_default=default_format is not None,
            help=format_help,
        )(command)
        return command

    return decorate


def view_options(command):
    """--show and --color: how a table is drawn for a person (machine-readable formats ignore them)."""
    command = click.option(
        "--color",
        "color",
        type=click.Choice([c.value for c in ColorChoice]),
        default=ColorChoice.AUTO.value,
        show_default=True,
        help="auto: colour only on a terminal, and only when NO_COLOR is unset or empty.",
    )(command)
    command = click.option(
        "--show",
        type=click.Choice(["all", "findings"]),
        default="all",
        show_default=True,
        help="all: every variable; findings: only what needs a look.",
    )(command)
    return command


def baseline_options(writable: bool = True):
    """--baseline, --no-baseline and (scan, check) --write-baseline."""

    def decorate(command):
        if writable:
            command = click.option(
                "--write-baseline",
                "write_baseline",
                type=click.Path(path_type=Path, dir_okay=False),
                help="Record every finding of this run in FILE (JSON); this run and later runs with "
                "--baseline FILE then report only new ones.",
            )(command)
        command = click.option("--no-baseline", is_flag=True, help="Ignore the baseline set in [tool.decay-audit].")(
            command
        )
        command = click.option(
            "--baseline",
            "baseline_file",
            type=click.Path(path_type=Path, dir_okay=False),
            help="Accepted findings (written by --write-baseline): only findings not in it are reported as "
            "findings and count for --strict. Default: baseline in [tool.decay-audit].",
        )(command)
        return command

    return decorate


def _read_baseline(settings: Effective, write_baseline: Path | None) -> Baseline | None:
    """The baseline to compare with: none when one is being written (this run's findings become it)."""
    if write_baseline is not None or settings.baseline is None:
        return None
    from decay_audit.baseline import read_baseline

    return read_baseline(settings.baseline)


def _view(show: str, color: str, output: Path | None) -> dict[str, Any]:
    """What render needs to draw for a person: only when the report goes to a terminal."""
    import shutil

    from decay_audit.config import use_color
    from decay_audit.report import Show

    terminal = output is None and sys.stdout.isatty()
    return {
        "show": Show(show),
        "color": use_color(color, terminal),
        "width": shutil.get_terminal_size().columns if terminal else None,
    }


def _note(quiet: bool, message: str) -> None:
    if not quiet:
        click.echo(f"decay-audit: {message}", err=True)


def _exit(findings: bool, exit_zero: bool) -> None:
    if findings and not exit_zero:
        sys.exit(EXIT_FINDINGS)


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
@common_options(
    "scan",
    "scan-many",
    format_help="Report format. Several models: table (one row per model), json (one report per model), sarif.",
)
@view_options
@policy_options
@click.option("--limit", "limits", multiple=True, metavar="NAME=N", help=LIMIT_HELP)
@baseline_options()
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
@with_settings()
def scan(
    models: tuple[Path, ...],
    output_format: str,
    output: Path | None,
    quiet: bool,
    exit_zero: bool,
    show: str,
    color: str,
    settings: Effective,
    write_baseline: Path | None,
    jobs: int | None,
    plot_file: Path | None,
) -> None:
    """Classify every variable of MODEL and decide which get weight decay.

    MODEL is a .keras file, a legacy .h5 or .weights.h5, a SavedModel directory,
    or a directory that holds exactly one of these. Several MODELs, a directory
    holding several models (searched recursively) or a glob scan every model found,
    one summary row each. With --strict, exit 1 on low-confidence or conflicting
    verdicts and dead overrides that are not in the baseline.
    """
    from decay_audit.loaders.discover import single_model

    if plot_file is not None:
        from decay_audit.report.plot import require_matplotlib

        require_matplotlib(plot_file)
    baseline = _read_baseline(settings, write_baseline)
    single = single_model(models)
    view = _view(show, color, output)
    if single is None:
        _scan_many(
            models, output_format, output, view, settings, baseline, write_baseline, jobs, plot_file, quiet, exit_zero
        )
        return
    from decay_audit.loaders import start_load

    pending = start_load(single, settings.limits)  # the reader child works while the next stages import
    try:
        from decay_audit.baseline import all_findings, baselined_count, through_baseline, write_baseline_file
        from decay_audit.report import Subject, render
        from decay_audit.stages.scan import scan_inventory

        policy = _policy(settings)
    except BaseException:
        pending.cancel()
        raise
    with _cyclic_collector_paused():
        report = scan_inventory(pending.result(), policy)
        if write_baseline is not None:
            baseline = write_baseline_file(write_baseline, all_findings(report, single), "--write-baseline")
            _note(quiet, f"wrote {len(baseline.fingerprints)} findings to the baseline {write_baseline}")
        report = through_baseline(report, baseline, single)
        text = render(Subject.SCAN, output_format, report, **view, model=single)
    _write_output(text, output)
    if plot_file is not None:
        from decay_audit.report.plot import plot_scan

        plot_scan(report, plot_file)
    if baseline is not None:
        _note(quiet, f"{baselined_count(report)} findings in the baseline {baseline.path} not reported")
    problems = report.strict_problems()
    if settings.strict and problems:
        summary = report.summary()
        reason = (
            f"{problems} low-confidence or conflicting verdicts or dead overrides not in the baseline"
            if baseline is not None
            else f"{summary.low_confidence} low-confidence and {summary.conflicting} conflicting verdicts, "
            f"{len(report.policy_findings.dead_overrides)} dead overrides"
        )
        click.echo(f"decay-audit: {reason} (--strict)", err=True)
        _exit(True, exit_zero)


@contextlib.contextmanager
def _cyclic_collector_paused() -> Iterator[None]:
    """One model's records, classifications and report rows are made once and hold no reference
    cycles: reference counting frees them, and the cyclic collector would only re-scan them as
    they are made (a 6,000-variable scan: 30 ms). The reader child runs without it too."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _scan_many(
    models: tuple[Path, ...],
    output_format: str,
    output: Path | None,
    view: dict[str, Any],
    settings: Effective,
    baseline: Baseline | None,
    write_baseline: Path | None,
    jobs: int | None,
    plot_file: Path | None,
    quiet: bool,
    exit_zero: bool,
) -> None:
    from decay_audit.baseline import all_findings, baselined_count, batch_through_baseline, write_baseline_file
    from decay_audit.loaders.discover import discover
    from decay_audit.report import Subject, render
    from decay_audit.results import BatchReport
    from decay_audit.stages.scan_many import missing_items, scan_many

    discovered = discover(models)
    if not discovered.models and not discovered.missing:
        raise UsageError(", ".join(str(m) for m in models), "no model found")
    if plot_file is not None:
        raise UsageError("--plot", "draws one model; give one MODEL")
    policy, limits = _policy(settings), settings.limits
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
    if write_baseline is not None and not batch.errors:  # an unreadable model would drop its findings
        baseline = write_baseline_file(write_baseline, all_findings(batch), "--write-baseline")
        _note(quiet, f"wrote {len(baseline.fingerprints)} findings to the baseline {write_baseline}")
    batch = batch_through_baseline(batch, baseline)
    _write_output(render(Subject.SCAN_MANY, output_format, batch, **view), output)
    totals = batch.totals()
    if totals.unreadable:
        for item in batch.errors:
            click.echo(f"decay-audit: error: {item.error}", err=True)
        sys.exit(EXIT_INPUT)
    if baseline is not None:
        _note(quiet, f"{baselined_count(batch)} findings in the baseline {baseline.path} not reported")
    if settings.strict and totals.strict_problems:
        click.echo(
            f"decay-audit: {totals.strict_problems} low-confidence or conflicting verdicts or dead "
            f"overrides in {totals.models} models{' not in the baseline' if baseline is not None else ''} (--strict)",
            err=True,
        )
        _exit(True, exit_zero)


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option(
    "--target",
    required=True,
    type=click.Choice(TARGETS),
    help="The tool whose rule language to write (see README for each one's matching semantics).",
)
@common_options(
    default_format=None,
    format_help="The rule file's format: json or yaml (default: yaml when --output ends in .yaml/.yml, else json).",
)
@policy_options
@click.option(
    "--snippet",
    is_flag=True,
    help="Also print a ready-to-paste Python snippet that applies the rule, on stderr (stdout keeps the rule alone).",
)
@click.option(
    "--snippet-output",
    "snippet_output",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Write the snippet to this file instead of stderr (implies --snippet).",
)
@click.option("--limit", "limits", multiple=True, metavar="NAME=N", help=LIMIT_HELP)
@baseline_options(writable=False)
@with_settings()
def rules(
    model: Path,
    target: str,
    output_format: str | None,
    output: Path | None,
    quiet: bool,
    exit_zero: bool,
    snippet: bool,
    snippet_output: Path | None,
    settings: Effective,
) -> None:
    """Write MODEL's exclusion rules in the language of a training tool.

    Before writing, the rule is applied to the model with the tool's own matching
    semantics; if it would select anything but the intended set, nothing is written
    and the command exits 1 naming the variables. With --strict, a rule built on
    uncertain verdicts (not in the baseline) is written and the command exits 1.
    """
    from decay_audit.baseline import through_baseline
    from decay_audit.stages.rules import emit_rules, rule_snippet, serialise_rules
    from decay_audit.stages.scan import scan as run_scan

    baseline = _read_baseline(settings, None)
    report = run_scan(model, preset=_policy(settings), limits=settings.limits)
    emission = emit_rules(report, target)
    if not emission.ok:
        names = ", ".join((emission.unexpressible + emission.wrongly_selected)[:8])
        click.echo(
            f"decay-audit: the {target} rule cannot select exactly the intended set; wrong for: {names}. "
            "Use --target native or optax, which name every variable.",
            err=True,
        )
        _exit(True, exit_zero)
        return
    snippet_text = rule_snippet(emission, output) if snippet or snippet_output else ""
    if snippet_output is not None:  # refused before anything is written
        if not snippet_text:
            raise UsageError(str(snippet_output), f"the {target} target has no snippet")
        if not (snippet_output.parent if str(snippet_output.parent) else Path(".")).is_dir():
            raise UsageError(str(snippet_output), "directory of --snippet-output does not exist")
    shape = Path(f"rules.{output_format}") if output_format else output  # serialise_rules picks YAML by suffix
    _write_output(serialise_rules(emission.document, shape), output)
    if snippet_output is not None:
        from decay_audit.files import write_atomically

        write_atomically(snippet_output, snippet_text, "--snippet-output")
    elif snippet_text:
        click.echo(snippet_text, err=True, nl=False)
    problems = through_baseline(report, baseline, model).strict_problems()
    if settings.strict and problems:
        click.echo(
            f"decay-audit: the rule rests on {problems} low-confidence or conflicting verdicts or dead "
            "overrides (--strict)",
            err=True,
        )
        _exit(True, exit_zero)


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
@common_options("check")
@view_options
@click.option("--limit", "limits", multiple=True, metavar="NAME=N", help=LIMIT_HELP)
@baseline_options()
@with_settings()
def check(
    model: Path,
    target: str,
    rules_file: Path | None,
    var_names: tuple[str, ...],
    more_patterns: tuple[str, ...],
    keras_backend: str | None,
    output_format: str,
    output: Path | None,
    quiet: bool,
    exit_zero: bool,
    show: str,
    color: str,
    settings: Effective,
    write_baseline: Path | None,
) -> None:
    """Audit an existing exclusion rule against MODEL and the policy.

    Reports what each pattern matches, dead patterns, over-broad patterns, and
    variables decayed or excluded against the policy. Exit 1 on any finding not
    in the baseline.
    """
    from decay_audit.baseline import all_findings, check_through_baseline, through_baseline, write_baseline_file
    from decay_audit.stages.rules import check_rules, read_rule
    from decay_audit.stages.scan import scan as run_scan

    if more_patterns and not var_names:
        raise UsageError("check", f"unexpected arguments {' '.join(more_patterns)!r}")
    baseline = _read_baseline(settings, write_baseline)
    rule = read_rule(target, rules_file, var_names + more_patterns, keras_backend)
    report = run_scan(model, preset=_policy(settings), limits=settings.limits)
    result = check_rules(report, target, rule, keras_backend)
    if write_baseline is not None:
        pairs = [(str(model), f) for f in result.findings] + all_findings(report, model)
        baseline = write_baseline_file(write_baseline, pairs, "--write-baseline")
        _note(quiet, f"wrote {len(baseline.fingerprints)} findings to the baseline {write_baseline}")
    result, accepted = check_through_baseline(result, baseline, model)
    from decay_audit.report import Subject, render

    view = _view(show, color, output)
    _write_output(render(Subject.CHECK, output_format, result, **view, model=model, rules=rules_file), output)
    if baseline is not None:
        _note(quiet, f"{accepted} findings in the baseline {baseline.path} not reported")
    if result.findings:
        _exit(True, exit_zero)
        return
    problems = through_baseline(report, baseline, model).strict_problems()
    if settings.strict and problems:
        click.echo(
            f"decay-audit: {problems} low-confidence or conflicting verdicts or dead overrides"
            f"{' not in the baseline' if baseline is not None else ''} (--strict)",
            err=True,
        )
        _exit(True, exit_zero)


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
    help="Probe steps. Fewer than two optimizer updates are raised to 2 x gradient_accumulation_steps "
    "(at least 2), and the report says so in a note.",
)
@click.option(
    "--count-l1",
    is_flag=True,
    help="Judge L1 penalties (Ftrl l1_regularization_strength, regularizers.L1, L1L2's L1 part) as decay. "
    "By default they are sparsity, shown in their own l1 column and never a double decay.",
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
@common_options("verify")
@view_options
@click.option(
    "--junit", type=click.Path(path_type=Path, dir_okay=False), help="Also write JUnit XML, one test case per variable."
)
@click.option(
    "--plot",
    "plot_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Also draw each variable's measured decay against lr_t*wd as a PNG (needs the [plot] extra).",
)
@click.option("--debug", is_flag=True, help="When the set-up cannot be probed, also print the traceback.")
@click.pass_context
@with_settings(no_baseline=True)
def verify(
    ctx: click.Context,
    model: Path | None,
    setup_spec: str | None,
    optimizer: str | None,
    learning_rate: float | None,
    weight_decay: float | None,
    exclude_var_names: tuple[str, ...],
    custom_modules: tuple[str, ...],
    rules_file: Path | None,
    steps: int,
    count_l1: bool,
    device: str | None,
    keras_backend: str | None,
    output_format: str,
    output: Path | None,
    quiet: bool,
    exit_zero: bool,
    show: str,
    color: str,
    junit: Path | None,
    plot_file: Path | None,
    debug: bool,
    settings: Effective,
) -> None:
    """Measure, per variable, the decay a real training set-up applies; exit 1 where it differs from the intent.

    Runs a short probe on synthetic batches (or the set-up's own): at every step, from one
    snapshot of all model and optimizer state, the real step and its twin without decay; the
    difference is the decay each variable received. The model's weights are restored afterwards.
    Exit 1 only for measured mismatches (and, with --strict, intent rules that match nothing); a
    set-up that cannot be probed exits 2 with one line naming the stage (import, make(), batch,
    step, measurement) and the cause. Mistakes that need no Keras (a missing file or function, an
    unknown backend) fail at once, before TensorFlow is imported.
    """
    import traceback
    import warnings

    from decay_audit.probe.setup import SetupError, Stage, describe_exception
    from decay_audit.stages.verify import VerifyOptions, precheck

    if plot_file is not None:  # before any work: a missing extra is a usage error, not a late surprise
        from decay_audit.report.plot import require_matplotlib

        require_matplotlib(plot_file)
    progress = _StepProgress(_show_progress(quiet, output_format))
    options = VerifyOptions(
        steps=steps,
        count_l1=count_l1,
        rules=rules_file,
        device=device,
        backend=keras_backend,
        optimizer=optimizer,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        exclude_var_names=exclude_var_names,
        custom_modules=custom_modules,
        expectations=tuple(ctx.meta.get("ordered_expectations", ())),
        policy=_policy(settings),
        on_step=progress.on_step,
        on_phase=progress.on_phase,
    )
    precheck(model, setup_spec, options)  # cheap mistakes fail here, before Keras is imported
    try:
        with warnings.catch_warnings(), progress:
            if not debug:  # Keras/TensorFlow warnings about the user's model are not verify's report
                import logging

                warnings.simplefilter("ignore")
                logging.getLogger("tensorflow").setLevel(logging.ERROR)
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

    view = _view(show, color, output)
    _write_output(render(Subject.VERIFY, output_format, report, **view, setup=setup_spec, model=model), output)
    if junit is not None:
        _write_output(format_junit(report), junit)
    if plot_file is not None:
        from decay_audit.report.plot import plot_verify

        plot_verify(report, plot_file)
    if not report.ok:
        _exit(True, exit_zero)
        return
    if settings.strict and report.dead_selectors:
        click.echo(
            f"decay-audit: {len(report.dead_selectors)} intent rules match no variable: "
            f"{', '.join(report.dead_selectors)} (--strict)",
            err=True,
        )
        _exit(True, exit_zero)


def _run_verify(model: Path | None, setup_spec: str | None, options: VerifyOptions) -> VerifyReport:
    """The model file or the set-up, whichever was given."""
    if (model is None) == (setup_spec is None):
        raise UsageError("verify", "give exactly one of MODEL or --setup FILE.py:FUNCTION")
    from decay_audit.stages.verify import verify_model_file, verify_setup_file

    if model is not None:
        return verify_model_file(model, options)
    return verify_setup_file(str(setup_spec), options)


class _StepProgress:
    """verify's progress on stderr: one status line per phase (import, build, trace, probe), each
    replacing the last, then a bar opened at the first finished probe step, when the step count is
    known (gradient accumulation can raise it). Everything is closed before any result or error
    line is printed, so the report never shares a line with it."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar: Any = None  # click's ProgressBar, opened at the first step
        self.status = False  # a phase line is on screen, not yet ended

    def on_phase(self, name: str) -> None:
        if not self.enabled:
            return
        from decay_audit.stages.verify import PHASES

        number = PHASES.index(name) + 1 if name in PHASES else 0
        click.echo(f"\r\x1b[Kverify [{number}/{len(PHASES)}] {name}", nl=False, err=True)
        self.status = True

    def _clear_status(self) -> None:
        if self.status:
            click.echo("\r\x1b[K", nl=False, err=True)
            self.status = False

    def on_step(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            self._clear_status()
            self.bar = click.progressbar(length=total, label="probing", file=sys.stderr, show_pos=True)
            self.bar.__enter__()
        self.bar.update(1)

    def __enter__(self) -> _StepProgress:
        return self

    def __exit__(self, *exc_info) -> None:
        self._clear_status()
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


if __name__ == "__main__":  # pragma: no cover
    main()
