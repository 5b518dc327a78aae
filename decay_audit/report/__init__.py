"""Output formats, registered in one table: adding one is one function plus one line."""

from __future__ import annotations

import enum
from collections.abc import Callable

from decay_audit.audit import ScanReport


class OutputFormat(str, enum.Enum):
    TABLE = "table"
    JSON = "json"
    CSV = "csv"
    MARKDOWN = "markdown"

    def __str__(self) -> str:
        return self.value

    def render(self, report: ScanReport) -> str:
        return _formatter(self)(report)


def _formatter(fmt: OutputFormat) -> Callable[[ScanReport], str]:
    from decay_audit.report.csv_format import format_csv
    from decay_audit.report.json_format import format_json
    from decay_audit.report.table import format_markdown, format_table

    return {
        OutputFormat.TABLE: format_table,
        OutputFormat.JSON: format_json,
        OutputFormat.CSV: format_csv,
        OutputFormat.MARKDOWN: format_markdown,
    }[fmt]
