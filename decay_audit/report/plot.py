"""Pictures a reviewer can paste into a pull request (``--plot FILE.png``; the ``[plot]`` extra).

- scan: parameters decayed vs excluded per kind (bars), from the scan report's decisions;
- verify: per variable, the measured decoupled decay per step relative to the configured
  ``lr_t * weight_decay * w`` (1 = exactly as configured), grouped by kind, log scale,
  mismatches marked. The report keeps that ratio, not lr_t itself (lr_t changes per step
  under a schedule), so the ratio is what is drawn. Variables where no decoupled decay was
  measured have no ratio: they go in a separate "not measured" strip under the log axis, never
  on it, because a point at any height there would read as a measurement.

matplotlib's object API is used (``Figure`` + Agg), never pyplot: no global state, no display.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decay_audit.errors import OptionError, UsageError
from decay_audit.files import write_atomically

SCAN_SIZE = (8.0, 4.5)
"""Inches at 100 dpi: 800 x 450 pixels."""
VERIFY_SIZE = (10.0, 5.0)
"""1000 x 500 pixels."""
DPI = 100
NAMED = 60
"""Up to this many variables the x axis names each one; beyond, names would overlap, so the kind
groups stay labelled and the mismatches are listed by name beside the plot instead."""
LISTED = 12
"""Mismatches named beside a plot too large to name every variable."""


def require_matplotlib(destination: str | os.PathLike | None = None) -> None:
    """Fail before the work, not after it, when the [plot] extra is missing or the PNG cannot be written there."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OptionError("plot", "needs matplotlib: pip install 'decay-audit[plot]'") from None
    if destination is not None:
        directory = Path(destination).parent if str(Path(destination).parent) else Path(".")
        if not directory.is_dir():
            raise UsageError(str(destination), "directory of --plot does not exist")


def _figure(size: tuple[float, float]) -> Any:
    require_matplotlib()
    from matplotlib.figure import Figure

    return Figure(figsize=size, dpi=DPI, layout="constrained")


def _save(figure: Any, path: str | os.PathLike) -> None:
    """Write atomically, as the reports are: a failed run leaves no half-written PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    write_atomically(path, buffer.getvalue(), "--plot")


# --- scan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScanBars:
    """What the scan picture shows."""

    kinds: tuple[str, ...]
    decayed: tuple[int, ...]
    """Parameters decayed, per kind."""
    excluded: tuple[int, ...]
    """Parameters not decayed, per kind."""


def scan_bars(report: Any) -> ScanBars:
    kinds, decayed, excluded = [], [], []
    for entry in report.summary().per_kind:
        members = [v for v in report.variables if v.classification.kind is entry.kind]
        kinds.append(entry.kind.value)
        decayed.append(sum(v.record.size for v in members if v.decision.decay))
        excluded.append(sum(v.record.size for v in members if not v.decision.decay))
    return ScanBars(tuple(kinds), tuple(decayed), tuple(excluded))


def scan_figure(report: Any) -> Any:
    bars = scan_bars(report)
    figure = _figure(SCAN_SIZE)
    axes = figure.add_subplot()
    positions = range(len(bars.kinds))
    width = 0.4
    for offset, values, label, colour in (
        (-width / 2, bars.decayed, "decayed", "#1a7f37"),
        (width / 2, bars.excluded, "excluded", "#8c959f"),
    ):
        drawn = axes.bar([p + offset for p in positions], values, width, label=label, color=colour, gid=label)
        axes.bar_label(drawn, labels=[f"{v:,}" if v else "" for v in values], fontsize=7, padding=2)
    axes.set_xticks(list(positions), bars.kinds)
    axes.set_ylabel("parameters (log scale)")
    axes.set_yscale("symlog", linthresh=1)
    axes.set_ylim(0, max(bars.decayed + bars.excluded + (1,)) * 4)
    axes.set_title(
        f"{Path(report.source).name}: parameters decayed vs excluded per kind ({report.policy.describe()})", fontsize=10
    )
    axes.legend()
    return figure


def plot_scan(report: Any, path: str | os.PathLike) -> ScanBars:
    _save(scan_figure(report), path)
    return scan_bars(report)


# --- verify ------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyPoints:
    """What the verify picture shows, in drawing order (grouped by kind)."""

    paths: tuple[str, ...]
    kinds: tuple[str, ...]
    ratios: tuple[float | None, ...]
    """Measured decoupled decay / configured lr_t * wd * w; None where none was measured."""
    mismatches: tuple[bool, ...]
    coupled: tuple[bool, ...] = ()
    """A penalty through the loss (coupled decay) was measured too: annotated "+ coupled"."""


def _kind(intent: str) -> str:
    """verify's policy intents read "<kind> under <policy>"; rule-file and glob intents name no kind."""
    from decay_audit.kinds import Kind

    first = intent.split(" ", 1)[0]
    return first if first in {k.value for k in Kind} else "other"


def verify_points(report: Any) -> VerifyPoints:
    from decay_audit.kinds import Kind

    order = {k.value: i for i, k in enumerate(Kind)}
    measured = sorted(report.measurements, key=lambda m: order.get(_kind(m.intent), len(order)))
    return VerifyPoints(
        tuple(m.path for m in measured),
        tuple(_kind(m.intent) for m in measured),
        tuple(m.decoupled_ratio for m in measured),
        tuple(not m.ok for m in measured),
        tuple(m.coupled_steps > 0 for m in measured),
    )


def verify_figure(report: Any) -> Any:
    """One point per variable, up to the 500-odd of a large model: a scatter stays readable where
    names would not, so past :data:`NAMED` variables the kinds label the groups and the mismatches
    are named in a list. "+ coupled" is a ring around the point, not a text label, for the same
    reason. Variables with no decoupled decay measured sit in their own strip, not on the log axis."""
    points = verify_points(report)
    figure = _figure(VERIFY_SIZE)
    measured_axes, strip = figure.subplots(2, 1, sharex=True, height_ratios=(5, 1))
    xs = list(range(len(points.paths)))
    ratio = {i: r for i, r in enumerate(points.ratios) if r is not None and r > 0}
    on_axis = sorted(ratio)
    off_axis = [i for i in xs if i not in ratio]
    marker_size = 28 if len(xs) <= NAMED else 12
    for wrong, colour, label in ((False, "#1a7f37", "as intended"), (True, "#cf222e", "mismatch")):
        chosen = [i for i in on_axis if points.mismatches[i] == wrong]
        if chosen:
            measured_axes.scatter(
                chosen,
                [ratio[i] for i in chosen],
                color=colour,
                label=label,
                marker="x" if wrong else "o",
                s=marker_size,
                zorder=4 if wrong else 3,
                gid=label,
            )
        chosen = [i for i in off_axis if points.mismatches[i] == wrong]
        if chosen:
            style = {"color": colour} if wrong else {"facecolors": "none", "edgecolors": "#57606a"}
            strip.scatter(
                chosen,
                [0.0] * len(chosen),
                label="not measured, mismatch" if wrong else "not measured (no decoupled decay)",
                marker="x" if wrong else "o",
                s=marker_size,
                zorder=4 if wrong else 3,
                gid=f"not measured: {label}",
                **style,
            )
    coupled = [i for i in on_axis if points.coupled[i]]
    if coupled:
        measured_axes.scatter(
            coupled,
            [ratio[i] for i in coupled],
            facecolors="none",
            edgecolors="#bf8700",
            s=marker_size * 4,
            linewidths=1,
            label="coupled decay measured too",
            zorder=2,
            gid="coupled",
        )
    coupled_off = [i for i in off_axis if points.coupled[i]]
    if coupled_off:
        strip.scatter(
            coupled_off,
            [0.0] * len(coupled_off),
            facecolors="none",
            edgecolors="#bf8700",
            s=marker_size * 4,
            linewidths=1,
            zorder=2,
            gid="coupled",
        )
    measured_axes.axhline(1.0, color="#57606a", linestyle="--", linewidth=1, label="lr_t * wd (configured)")
    measured_axes.set_yscale("log")
    heights = list(ratio.values()) + [1.0]
    measured_axes.set_ylim(min(heights) / 3, max(heights) * 3)
    measured_axes.set_ylabel("measured decay per step\n/ (lr_t * wd * w)", fontsize=9)
    strip.set_ylim(-1, 1)
    strip.set_yticks([0.0], ["not\nmeasured"], fontsize=8)
    strip.set_facecolor("#f6f8fa")
    strip.set_xlim(-0.5, len(xs) - 0.5)
    start = 0
    for i in range(1, len(xs) + 1):  # kind groups: a separator and a label with the count
        if i == len(xs) or points.kinds[i] != points.kinds[start]:
            name = points.kinds[start] if len(xs) <= NAMED else f"{points.kinds[start]} ({i - start})"
            measured_axes.text(
                (start + i - 1) / 2,
                1.01,
                name,
                transform=measured_axes.get_xaxis_transform(),
                ha="center",
                va="bottom",
                fontsize=9,
                gid="kind",
            )
            if i < len(xs):
                for axes in (measured_axes, strip):
                    axes.axvline(i - 0.5, color="#d0d7de", linewidth=1)
            start = i
    if len(xs) <= NAMED:
        strip.set_xticks(xs, points.paths, rotation=60, ha="right", fontsize=7)
    else:
        strip.set_xticks([])
        strip.set_xlabel(f"{len(xs)} variables, grouped by kind")
        mismatched = [points.paths[i] for i in xs if points.mismatches[i]]
        if mismatched:
            more = len(mismatched) - LISTED
            listed = "\n".join(mismatched[:LISTED]) + (f"\n... and {more} more" if more > 0 else "")
            measured_axes.text(
                1.02,
                0.0,
                f"mismatches ({len(mismatched)}):\n{listed}",
                transform=measured_axes.transAxes,
                ha="left",
                va="bottom",
                fontsize=7,
                color="#cf222e",
                gid="mismatch list",
            )
    measured_axes.set_title(
        f"{report.setup}: {report.optimizer}, weight_decay={report.weight_decay}, {report.steps} steps",
        fontsize=10,
        pad=16,
    )
    handles, labels = measured_axes.get_legend_handles_labels()
    more, more_labels = strip.get_legend_handles_labels()
    measured_axes.legend(
        handles + more, labels + more_labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0
    )
    return figure


def plot_verify(report: Any, path: str | os.PathLike) -> VerifyPoints:
    _save(verify_figure(report), path)
    return verify_points(report)
