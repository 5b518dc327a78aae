"""Output formats, registered in one table: adding one is one function plus one line.

Every command renders through :func:`render`; its ``--format`` choices come from
:func:`formats_for`, so a format exists for a command exactly when the table says so.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from decay_audit.kinds import TextEnum


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
_FORMATTERS: dict[tuple[Subject, OutputFormat], tuple[str, str, bool]] = {
    (_S.SCAN, _F.TABLE): ("decay_audit.report.table", "format_table", False),
    (_S.SCAN, _F.JSON): ("decay_audit.report.json_format", "format_json", False),
    (_S.SCAN, _F.CSV): ("decay_audit.report.csv_format", "format_csv", False),
    (_S.SCAN, _F.MARKDOWN): ("decay_audit.report.table", "format_markdown", False),
    (_S.SCAN, _F.SARIF): ("decay_audit.report.sarif", "scan_sarif", True),
    (_S.SCAN, _F.HTML): ("decay_audit.report.html", "scan_html", False),
    (_S.SCAN_MANY, _F.TABLE): ("decay_audit.report.batch_format", "format_batch_table", False),
    (_S.SCAN_MANY, _F.JSON): ("decay_audit.report.batch_format", "format_batch_json", False),
    (_S.SCAN_MANY, _F.SARIF): ("decay_audit.report.sarif", "batch_sarif", True),
    (_S.CHECK, _F.TABLE): ("decay_audit.report.check_format", "format_check_table", False),
    (_S.CHECK, _F.JSON): ("decay_audit.report.check_format", "format_check_json", False),
    (_S.CHECK, _F.SARIF): ("decay_audit.report.sarif", "check_sarif", True),
    (_S.VERIFY, _F.TABLE): ("decay_audit.report.verify_format", "format_verify_table", False),
    (_S.VERIFY, _F.JSON): ("decay_audit.report.verify_format", "format_verify_json", False),
    (_S.VERIFY, _F.SARIF): ("decay_audit.report.sarif", "verify_sarif", True),
    (_S.VERIFY, _F.HTML): ("decay_audit.report.html", "verify_html", False),
}
"""(subject, format) → (module, function, takes context). Modules load on use, so JSON output
never imports tabulate. A function that takes context also gets the command's inputs as
keywords (``model=``, ``rules=``, ``setup=``): SARIF needs them as locations."""


def formats_for(subject: Subject | str) -> list[str]:
    """The ``--format`` choices of one command, in the table's order."""
    return [fmt.value for (owner, fmt) in _FORMATTERS if owner is Subject(subject)]


def render(subject: Subject | str, fmt: OutputFormat | str, report: Any, **context: Any) -> str:
    """``report`` rendered as ``fmt``; ``context`` (paths the command was given) reaches the
    formats that use it and is ignored by the others."""
    import importlib

    key = (Subject(subject), OutputFormat(fmt))
    if key not in _FORMATTERS:
        from decay_audit.errors import OptionError

        raise OptionError(
            "format", f"{key[1].value} is not available for {key[0].value} (one of {', '.join(formats_for(key[0]))})"
        )
    module_name, function_name, takes_context = _FORMATTERS[key]
    function: Callable[..., str] = getattr(importlib.import_module(module_name), function_name)
    return function(report, **context) if takes_context else function(report)
