"""``--format csv``: one row per variable, spreadsheet-safe."""

from __future__ import annotations

import csv
import io

from decay_audit.report.sanitize import safe_cell
from decay_audit.results import ScanReport

COLUMNS = (
    "path",
    "layer",
    "layer_class",
    "leaf",
    "shape",
    "dtype",
    "trainable",
    "parameters",
    "kind",
    "decay",
    "confidence",
    "evidence",
    "conflicts",
)


def format_csv(report: ScanReport) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for variable in report.variables:
        row = variable.row()
        row["shape"] = "x".join(str(d) for d in row["shape"])
        row["evidence"] = "; ".join(row["evidence"])
        row["conflicts"] = "; ".join(row["conflicts"])
        writer.writerow([safe_cell("" if row[c] is None else row[c]) for c in COLUMNS])
    return buffer.getvalue()
