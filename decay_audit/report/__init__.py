"""Output formats, registered in one table: adding one is one function plus one line."""

from __future__ import annotations

from collections.abc import Callable

from decay_audit.audit import ScanReport
from decay_audit.kinds import TextEnum


class OutputFormat(TextEnum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    MARKDOWN = "markdown"


    def render(self, report: ScanReport) -> str:
        return _formatter(self)(report)


_FORMATTERS: dict[OutputFormat, tuple[str, str]] = {
    OutputFormat.TABLE: ("decay_audit.report.table", "format_table"),
    OutputFormat.JSON: ("decay_audit.report.json_format", "format_json"),
    OutputFormat.CSV: ("decay_audit.report.csv_format", "format_csv"),
    OutputFormat.MARKDOWN: ("decay_audit.report.table", "format_markdown"),
}
"""Format → (module, function); modules load on use, so JSON output never imports tabulate."""


def _formatter(fmt: OutputFormat) -> Callable[[ScanReport], str]:
    import importlib

    module_name, function_name = _FORMATTERS[fmt]
    return getattr(importlib.import_module(module_name), function_name)
