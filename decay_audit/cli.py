"""The ``decay-audit`` command: parses options, calls the library, maps outcomes to exit codes.

Exit codes: 0 ok, 1 findings, 2 usage or input error (one line on stderr, no traceback).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import click

from decay_audit.errors import DecayAuditError, UsageError
from decay_audit.loaders.interface import DEFAULT_LIMITS, Limits

EXIT_OK, EXIT_FINDINGS, EXIT_INPUT = 0, 1, 2

_LIMIT_NAMES = {f.name.removeprefix("max_").replace("_", "-"): f.name for f in dataclasses.fields(Limits)}


def _fail(message: str) -> None:
    click.echo(f"decay-audit: error: {message}", err=True)
    sys.exit(EXIT_INPUT)


def _limits(values: tuple[str, ...]) -> Limits:
    changes = {}
    for value in values:
        name, _, number = value.partition("=")
        if name not in _LIMIT_NAMES or not number.isdigit():
            raise UsageError("--limit", f"expected NAME=N with NAME one of {', '.join(_LIMIT_NAMES)}, got {value!r}")
        changes[_LIMIT_NAMES[name]] = int(number)
    return dataclasses.replace(DEFAULT_LIMITS, **changes)


def _write_output(text: str, output: Path | None) -> None:
    """Write atomically: a failed run leaves no half-written report behind."""
    if output is None:
        click.echo(text, nl=False)
        return
    import tempfile

    output = Path(output)
    directory = output.parent if str(output.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(str(output), "directory of --output does not exist")
    handle, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{output.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temp_name, output)
    except OSError as exc:
        Path(temp_name).unlink(missing_ok=True)
        raise UsageError(str(output), f"cannot write ({exc.strerror or exc})") from None


class _Group(click.Group):
    """Turns every DecayAuditError into one stderr line and exit 2, wherever it is raised."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except DecayAuditError as exc:
            _fail(str(exc))
        except click.exceptions.Exit:
            raise
        except KeyboardInterrupt:
            _fail("interrupted")


LIMIT_HELP = ("Raise a safety bound, NAME=N (repeatable). Names: " + ", ".join(_LIMIT_NAMES)
              + ". Bounds are checked against sizes the file declares, before reading.")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="decay-audit")
def main() -> None:
    """Audit which weights of a TensorFlow/Keras model get weight decay.

    Reads .keras, .h5 / .weights.h5 and SavedModel directories from their metadata:
    nothing in the model file is executed, and the file is never modified.
    Exit codes: 0 ok, 1 findings, 2 usage or input error.
    """


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--format", "output_format", type=click.Choice(["table", "json", "csv", "markdown"]),
              default="table", show_default=True, help="Report format.")
@click.option("--output", "-o", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the report to this file instead of stdout.")
@click.option("--preset", type=click.Choice(["kernels-only"]), default="kernels-only", show_default=True,
              help="Decay policy: kernels-only decays kernels (minGPT convention) and nothing else.")
@click.option("--limit", "limits", multiple=True, metavar="NAME=N", help=LIMIT_HELP)
@click.option("--strict", is_flag=True,
              help="Exit 1 when any verdict is low-confidence or has conflicting evidence.")
def scan(model: Path, output_format: str, output: Path | None, preset: str, limits: tuple[str, ...],
         strict: bool) -> None:
    """Classify every variable of MODEL and decide which get weight decay.

    MODEL is a .keras file, a legacy .h5 or .weights.h5, a SavedModel directory,
    or a directory that holds exactly one of these.
    """
    from decay_audit.audit import scan as run_scan
    from decay_audit.report import OutputFormat

    report = run_scan(model, preset=preset, limits=_limits(limits))
    _write_output(OutputFormat(output_format).render(report), output)
    summary = report.summary()
    if strict and (summary.low_confidence or summary.conflicting):
        click.echo(f"decay-audit: {summary.low_confidence} low-confidence and {summary.conflicting} conflicting "
                   "verdicts (--strict)", err=True)
        sys.exit(EXIT_FINDINGS)


if __name__ == "__main__":  # pragma: no cover
    main()
