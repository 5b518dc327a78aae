"""Output formats, registered in one table: adding one is one function plus one line.

Every command renders through :func:`render`; its ``--format`` choices come from
:func:`formats_for`, so a format exists for a command exactly when the table says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from decay_audit.kinds import TextEnum
from decay_audit.report.terminal import Show

__all__ = ["OutputFormat", "Show", "Subject", "formats_for", "render"]


class OutputFormat(TextEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    MARKDOWN = "markdown"
    SARIF = "sarif"
    """SARIF 2.1.0, for code-scanning tools (GitHub, GitLab, VS Code's SARIF viewer)."""
    HTML = "html"
    """One self-contained page: no script or style from the network."""

    def render(self, report: Any) -> str:
        """A scan report in this format (the Python API's shortcut for ``render(SCAN, fmt, report)``)."""
        return render(Subject.SCAN, self, report)

    @property
    def machine_readable(self) -> bool:
        """Formats a program parses: nothing else may reach stdout, and no progress bar runs."""
        return self in (OutputFormat.JSON, OutputFormat.SARIF, OutputFormat.CSV)


class Subject(TextEnum):
    """What is being rendered: the report object of one command."""

    SCAN = "scan"
    """A :class:`~decay_audit.results.ScanReport`."""
    SCAN_MANY = "scan-many"
    """A :class:`~decay_audit.results.BatchReport` (``scan`` given several models)."""
    CHECK = "check"
    """A :class:`~decay_audit.results.CheckReport`."""
    VERIFY = "verify"
    """A :class:`~decay_audit.results.VerifyReport`."""


_S, _F = Subject, OutputFormat
_CONTEXT, _VIEW = "context", "view"
_FORMATTERS: dict[tuple[Subject, OutputFormat], tuple[str, str, str | None]] = {
    (_S.SCAN, _F.TABLE): ("decay_audit.report.table", "format_table", _VIEW),
    (_S.SCAN, _F.JSON): ("decay_audit.report.json_format", "format_json", None),
    (_S.SCAN, _F.CSV): ("decay_audit.report.csv_format", "format_csv", None),
    (_S.SCAN, _F.MARKDOWN): ("decay_audit.report.table", "format_markdown", _VIEW),
    (_S.SCAN, _F.SARIF): ("decay_audit.report.sarif", "scan_sarif", _CONTEXT),
    (_S.SCAN, _F.HTML): ("decay_audit.report.html", "scan_html", None),
    (_S.SCAN_MANY, _F.TABLE): ("decay_audit.report.batch_format", "format_batch_table", _VIEW),
    (_S.SCAN_MANY, _F.JSON): ("decay_audit.report.batch_format", "format_batch_json", None),
    (_S.SCAN_MANY, _F.SARIF): ("decay_audit.report.sarif", "batch_sarif", _CONTEXT),
    (_S.CHECK, _F.TABLE): ("decay_audit.report.check_format", "format_check_table", _VIEW),
    (_S.CHECK, _F.JSON): ("decay_audit.report.check_format", "format_check_json", None),
    (_S.CHECK, _F.SARIF): ("decay_audit.report.sarif", "check_sarif", _CONTEXT),
    (_S.VERIFY, _F.TABLE): ("decay_audit.report.verify_format", "format_verify_table", _VIEW),
    (_S.VERIFY, _F.JSON): ("decay_audit.report.verify_format", "format_verify_json", None),
    (_S.VERIFY, _F.SARIF): ("decay_audit.report.sarif", "verify_sarif", _CONTEXT),
    (_S.VERIFY, _F.HTML): ("decay_audit.report.html", "verify_html", None),
}
"""(subject, format) → (module, function, what else it takes). Modules load on use, so JSON output
never imports tabulate or rich. ``context``: the command's inputs as keywords (``model=``, ``rules=``,
``setup=``), which SARIF needs as locations. ``view``: how a person asked to see it (``show``, the
terminal's ``width``, ``color``), which only the formats a person reads take."""


def formats_for(subject: Subject | str) -> list[str]:
    """The ``--format`` choices of one command, in the table's order."""
    return [fmt.value for (owner, fmt) in _FORMATTERS if owner is Subject(subject)]


def render(
    subject: Subject | str,
    fmt: OutputFormat | str,
    report: Any,
    *,
    show: Show | str = Show.ALL,
    color: bool = False,
    width: int | None = None,
    **context: Any,
) -> str:
    """``report`` rendered as ``fmt``.

    ``show``, ``color`` and ``width`` are for a person at a terminal: the table formats take them
    (Markdown only ``show``) and the machine-readable ones ignore them. Without a ``width`` and
    without colour a table is exactly what it always was, so piped output and files never change
    with the terminal. ``context`` (paths the command was given) reaches the formats that use it
    and is ignored by the others."""
    import importlib

    key = (Subject(subject), OutputFormat(fmt))
    if key not in _FORMATTERS:
        from decay_audit.errors import OptionError

        raise OptionError(
            "format", f"{key[1].value} is not available for {key[0].value} (one of {', '.join(formats_for(key[0]))})"
        )
    module_name, function_name, takes = _FORMATTERS[key]
    function: Callable[..., str] = getattr(importlib.import_module(module_name), function_name)
    if takes == _CONTEXT:
        return function(report, **context)
    if takes == _VIEW:
        return function(report, show=Show(show), width=width, color=bool(color))
    return function(report)
