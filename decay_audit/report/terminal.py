"""Tables for a person at a terminal: fitted to its width, coloured on request, drawn with rich.

Only used when the caller gives a width or asks for colour. Without either (output piped to a
file, a CI log, the docs), the table formats keep their tabulate output byte for byte, because
scripts and the docs read it. rich loads on use, so JSON output and ``--help`` never import it.

How a table fits: every column knows whether it may give way (:class:`Fit`) and, when the
terminal is too narrow even for that, in which order it is left out (``drop``). The full
listing cuts long cells to one line with "…", so a 262-variable model stays 262 lines at 80
columns; the findings wrap, because there every word is the point.
"""

from __future__ import annotations

import enum
import io
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from decay_audit.kinds import TextEnum


class Show(TextEnum):
    """Which rows a person's report prints (``--show``); machine-readable formats always hold everything."""

    ALL = "all"
    """Every variable; on a terminal (a width given), the findings first."""
    FINDINGS = "findings"
    """Only the variables with findings (low confidence, conflicting evidence, an override, a wrong
    verify verdict), the policy's warnings and the summary: what a review of a large model needs."""


GAP = 2
"""Spaces between two columns, as tabulate's ``simple`` style has them."""
MIN_WIDTH = 40
"""Narrower terminals get this width: below it no table of decay-audit's is readable anyway."""
UNBOUNDED = 100_000
"""The width used for colour without a width (``--color always`` into a pager): nothing is cut."""


class Fit(enum.Enum):
    """How a column's cells give way when the table is wider than the terminal."""

    KEEP = "keep"
    """Never narrower than its longest cell: short vocabularies (kind, yes/no, verdicts, counts)."""
    CUT = "cut"
    """One line, cut with "…": long text in the full listing, where one line per variable matters more."""
    WRAP = "wrap"
    """Folds onto more lines: names that must stay whole, and findings."""


@dataclass(frozen=True)
class Column:
    header: str
    fit: Fit = Fit.KEEP
    right: bool = False
    """Numbers align right."""
    min_width: int = 12
    """Below this a CUT or WRAP column is not worth showing; a name column sets it high to stay whole."""
    drop: int = 0
    """0: always shown. Otherwise columns are left out, highest ``drop`` first, until the rest fits; then
    the left-out ones that fit after all come back, lowest ``drop`` first."""
    style: Callable[[str], str | None] | None = None
    """The rich style of a cell, from its text; only applied with colour."""


@dataclass(frozen=True)
class View:
    """How a person asked to see a report: which rows, how wide, in colour or not."""

    show: Show = Show.ALL
    width: int | None = None
    color: bool = False

    @property
    def plain(self) -> bool:
        """No width and no colour: the output scripts and the docs read, unchanged."""
        return self.width is None and not self.color

    @property
    def findings_only(self) -> bool:
        return Show(self.show) is Show.FINDINGS

    @property
    def columns(self) -> int:
        return UNBOUNDED if self.width is None else max(self.width, MIN_WIDTH)


PLAIN = View()
"""What a file, a pipe and the Python API get."""


@dataclass(frozen=True)
class Grid:
    """A table fitted to the view, and the headers of the columns that had to be left out."""

    table: Any
    dropped: tuple[str, ...]


# --- styles ---------------------------------------------------------------------------------------


def decay_style(cell: str) -> str | None:
    return {"yes": "green", "no": "cyan", "decay": "green", "no decay": "cyan"}.get(cell)


def confidence_style(cell: str) -> str | None:
    return "bold yellow" if cell == "low" else None


def verdict_style(cell: str) -> str | None:
    return "green" if cell == "ok" else "bold red" if cell else None


def finding_style(cell: str) -> str | None:
    return "yellow" if cell in ("low-confidence", "conflicting-evidence", "override") else "bold red" if cell else None


def status_style(cell: str) -> str | None:
    if cell == "ok":
        return "green"
    return "yellow" if cell == "check" else "bold red" if cell.startswith("error") else None


WARNING = "yellow"
PROBLEM = "bold red"
GOOD = "green"


# --- fitting --------------------------------------------------------------------------------------


def _cell_width(text: str) -> int:
    from rich.cells import cell_len

    return max((cell_len(line) for line in text.split("\n")), default=0)


def _widths(columns: Sequence[Column], rows: Sequence[Sequence[str]], width: int) -> dict[int, int]:
    """Column index → width for the columns kept. Short columns keep their width; the columns that
    may give way share the rest in order, each leaving the later ones their minimum."""
    natural = [max([_cell_width(c.header)] + [_cell_width(row[i]) for row in rows]) for i, c in enumerate(columns)]

    def least(i: int) -> int:
        return natural[i] if columns[i].fit is Fit.KEEP else min(natural[i], columns[i].min_width)

    def fits(chosen: list[int]) -> bool:
        return sum(least(i) for i in chosen) + GAP * (len(chosen) - 1) <= width

    # A column that may give way and has nothing to say (no layer class in a subclassed model's
    # file) is left out without a word: it would only take width from the evidence.
    kept = [i for i, c in enumerate(columns) if not c.drop or any(row[i].strip() for row in rows)]
    dropped = []
    while not fits(kept) and any(columns[i].drop for i in kept):
        dropped.append(max((i for i in kept if columns[i].drop), key=lambda i: (columns[i].drop, i)))
        kept.remove(dropped[-1])
    for i in sorted(dropped, key=lambda i: (columns[i].drop, i)):  # a narrow one may fit where a wide one did not
        if fits(sorted(kept + [i])):
            kept = sorted(kept + [i])
    widths = {i: natural[i] for i in kept if columns[i].fit is Fit.KEEP}
    space = width - GAP * (len(kept) - 1) - sum(widths.values())
    flexible = [i for i in kept if columns[i].fit is not Fit.KEEP]
    for position, i in enumerate(flexible):  # each takes what it needs, leaving the later ones their least
        reserved = sum(least(j) for j in flexible[position + 1 :])
        widths[i] = max(1, min(natural[i], space - reserved))
        space -= widths[i]
    return dict(sorted(widths.items()))


def grid(view: View, columns: Sequence[Column], rows: Sequence[Sequence[str]]) -> Grid:
    """``rows`` (text cells, already made safe to print) as a rich table that fits ``view``."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    widths = _widths(columns, rows, view.columns)
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
        header_style="bold" if view.color else "",
    )
    for i, width in widths.items():
        column = columns[i]
        table.add_column(
            column.header,
            justify="right" if column.right else "left",
            width=width,
            no_wrap=column.fit is not Fit.WRAP,
            overflow="fold" if column.fit is Fit.WRAP else "ellipsis",
        )
    for row in rows:
        cells = []
        for i in widths:
            column, text = columns[i], row[i]
            style = column.style(text) if column.style and view.color else None
            cells.append(Text(text, style=style or ""))
        table.add_row(*cells)
    empty = {i for i, c in enumerate(columns) if c.drop and not any(row[i].strip() for row in rows)}
    return Grid(table, tuple(columns[i].header for i in range(len(columns)) if i not in widths and i not in empty))


def text(line: str, style: str | None = None) -> Any:
    """A line of prose (a heading, a note, a warning) that wraps at the terminal's width."""
    from rich.text import Text

    return Text(line, style=style or "", overflow="fold")


def entry(view: View, title: Sequence[tuple[str, str | None]], body: Sequence[tuple[str, str | None]]) -> Any:
    """One finding as a block: its short fields on one line, then its explanation indented beneath,
    wrapped at the full width (a table would squeeze a long explanation into a narrow column)."""
    from rich.console import Group
    from rich.padding import Padding
    from rich.text import Text

    line = Text(overflow="fold")
    for index, (part, style) in enumerate(title):
        line.append(("  " if index else "") + part, style=(style if view.color else None) or "")
    return Group(line, *(Padding(text(part, style if view.color else None), (0, 0, 0, 4)) for part, style in body))


def left_out(dropped: Sequence[str], width: int | None) -> list[Any]:
    """One line saying which columns did not fit, so nobody takes a missing column for missing data."""
    if not dropped:
        return []
    names = ", ".join(dropped)
    return [text(f"({names} left out at {width} columns; --format json shows every field)", "dim")]


def paint(view: View, blocks: Sequence[Any]) -> str:
    """``blocks`` (rich renderables, ``""`` for a blank line) printed for ``view``: escape codes only
    with colour, and no line longer than the width."""
    from rich.console import Console

    buffer = io.StringIO()
    console = Console(
        file=buffer,
        width=view.columns,
        color_system="standard" if view.color else None,
        force_terminal=view.color,
        no_color=not view.color,
        highlight=False,
        emoji=False,
        markup=False,
        soft_wrap=False,
        force_jupyter=False,
        force_interactive=False,
        legacy_windows=False,
        _environ={},
    )
    for block in blocks:
        console.print(block)
    output = buffer.getvalue()
    return "\n".join(_TRAILING.sub(_codes_only, line) for line in output.splitlines()) + "\n"


_TRAILING = re.compile(r"(?:\x1b\[[0-9;]*m| )+$")
"""rich pads every cell to its column; the padding at a line's end, escape codes between, goes."""


def _codes_only(match: re.Match[str]) -> str:
    return match.group().replace(" ", "")
