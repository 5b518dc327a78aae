"""Make names from a model file safe to print.

Layer and variable names come from the file, so they may hold ANSI escapes
(which would rewrite the CI log or the terminal), other control characters, or a
leading ``=``/``+``/``-``/``@`` that a spreadsheet runs as a formula (CSV injection).
"""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
MAX_NAME = 300


def safe_text(value: object) -> str:
    """Printable text: control characters become ``\\xNN``/``\\uNNNN`` escapes, very long names are cut."""
    text = str(value)
    text = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)
    if len(text) > MAX_NAME:
        text = text[: MAX_NAME - 1] + "…"
    return text


def safe_cell(value: object) -> str:
    """``safe_text`` plus a leading apostrophe where a spreadsheet would see a formula."""
    text = safe_text(value)
    return "'" + text if text.startswith(_FORMULA_START) else text
