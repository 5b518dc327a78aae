"""Project settings from ``[tool.decay-audit]`` in ``pyproject.toml``, merged under the command line.

A team writes its policy once, next to the code that trains, instead of repeating ``--preset`` and
``--no-decay`` in every CI job and pre-commit hook. The file is found as ruff and mypy find theirs:
walking up from the current directory to the first ``pyproject.toml`` that exists (one without a
``[tool.decay-audit]`` table means no settings). Flags given on the command line always win, so a
setting can be overridden for one run without editing the file.

Unknown keys are errors, not ignored: ``presett = "ndim"`` silently ignored would audit under the
wrong policy and report success.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from decay_audit.errors import UsageError
from decay_audit.kinds import Preset, TextEnum
from decay_audit.loaders.interface import DEFAULT_LIMITS, Limits

TABLE = "tool.decay-audit"
KEYS = ("preset", "overrides", "limits", "baseline", "strict")
OVERRIDE_KEYS = ("decay", "no-decay")
LIMIT_NAMES: dict[str, str] = {
    f.name.removeprefix("max_").replace("_", "-"): f.name for f in dataclasses.fields(Limits)
}
"""The names ``--limit NAME=N`` and ``[tool.decay-audit.limits]`` use → the :class:`Limits` field."""


@dataclass(frozen=True)
class Settings:
    """What ``[tool.decay-audit]`` sets; None (or empty) where it sets nothing."""

    source: Path | None = None
    """The pyproject.toml read, for error messages; None when there was none."""
    preset: Preset | None = None
    decay: tuple[str, ...] | None = None
    """``overrides.decay`` selectors; None when the file gives no overrides."""
    no_decay: tuple[str, ...] | None = None
    limits: Mapping[str, int] = field(default_factory=dict)
    """:class:`Limits` field name → value."""
    baseline: Path | None = None
    """Resolved against the pyproject's directory, as ruff resolves its paths."""
    strict: bool | None = None


NO_SETTINGS = Settings()


def find_pyproject(start: Path | None = None) -> Path | None:
    """The first ``pyproject.toml`` in ``start`` (default: the current directory) or a parent."""
    directory = Path(start or Path.cwd()).resolve()
    for candidate in (directory, *directory.parents):
        path = candidate / "pyproject.toml"
        if path.is_file():
            return path
    return None


def load_settings(start: Path | None = None) -> Settings:
    """The settings of the project ``start`` lies in; :data:`NO_SETTINGS` outside any project."""
    path = find_pyproject(start)
    if path is None:
        return NO_SETTINGS
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on Python 3.10 only
        import tomli as tomllib
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(str(path), f"cannot read ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(str(path), f"not valid TOML ({exc})") from None
    table = document.get("tool", {}).get("decay-audit")
    if table is None:
        return NO_SETTINGS
    return parse_settings(table, path)


def _unknown(key: str, known: tuple[str, ...] | list[str], where: str, path: Path) -> UsageError:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}"
    return UsageError(str(path), f"unknown key {key!r} in [{where}] ({hint})")


def _strings(value: Any, name: str, path: Path) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise UsageError(str(path), f"[{TABLE}] {name} must be a list of strings")
    return tuple(value)


def parse_settings(table: Any, path: Path) -> Settings:
    """Validate a ``[tool.decay-audit]`` table; every problem is one error naming the file and the key."""
    if not isinstance(table, Mapping):
        raise UsageError(str(path), f"[{TABLE}] must be a table")
    for key in table:
        if key not in KEYS:
            raise _unknown(key, KEYS, TABLE, path)
    preset = None
    if "preset" in table:
        value = table["preset"]
        names = [p.value for p in Preset]
        if not isinstance(value, str) or value not in names:
            close = difflib.get_close_matches(str(value), names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(names)}"
            raise UsageError(str(path), f"[{TABLE}] preset: unknown preset {value!r} ({hint})")
        preset = Preset(value)
    decay = no_decay = None
    if "overrides" in table:
        overrides = table["overrides"]
        if not isinstance(overrides, Mapping):
            raise UsageError(str(path), f"[{TABLE}] overrides must be a table with decay and no-decay lists")
        for key in overrides:
            if key not in OVERRIDE_KEYS:
                raise _unknown(key, OVERRIDE_KEYS, f"{TABLE}.overrides", path)
        decay = _strings(overrides.get("decay", []), "overrides.decay", path)
        no_decay = _strings(overrides.get("no-decay", []), "overrides.no-decay", path)
    limits: dict[str, int] = {}
    if "limits" in table:
        if not isinstance(table["limits"], Mapping):
            raise UsageError(str(path), f"[{TABLE}] limits must be a table of NAME = N")
        for key, value in table["limits"].items():
            if key not in LIMIT_NAMES:
                raise _unknown(key, list(LIMIT_NAMES), f"{TABLE}.limits", path)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(str(path), f"[{TABLE}] limits.{key} must be a non-negative integer")
            limits[LIMIT_NAMES[key]] = value
    baseline = None
    if "baseline" in table:
        if not isinstance(table["baseline"], str) or not table["baseline"]:
            raise UsageError(str(path), f"[{TABLE}] baseline must be a file path")
        baseline = path.parent / table["baseline"]
    strict = None
    if "strict" in table:
        if not isinstance(table["strict"], bool):
            raise UsageError(str(path), f"[{TABLE}] strict must be true or false")
        strict = table["strict"]
    return Settings(path, preset, decay, no_decay, limits, baseline, strict)


def parse_limit(value: str) -> tuple[str, int]:
    """``NAME=N`` as ``--limit`` takes it → (:class:`Limits` field, N)."""
    name, _, number = value.partition("=")
    if name not in LIMIT_NAMES or not number.isdigit():
        raise UsageError("--limit", f"expected NAME=N with NAME one of {', '.join(LIMIT_NAMES)}, got {value!r}")
    return LIMIT_NAMES[name], int(number)


@dataclass(frozen=True)
class Effective:
    """The options a command runs with: its flags, then the project's settings, then the defaults."""

    preset: str
    decay: tuple[str, ...]
    no_decay: tuple[str, ...]
    policy_file: Path | None
    limits: Limits
    baseline: Path | None
    strict: bool


def merge(
    settings: Settings,
    *,
    preset: str | None = None,
    decay: tuple[str, ...] = (),
    no_decay: tuple[str, ...] = (),
    policy_file: Path | None = None,
    limits: tuple[str, ...] = (),
    baseline: Path | None = None,
    no_baseline: bool = False,
    strict: bool | None = None,
) -> Effective:
    """Command-line values (None or empty: not given) over ``settings`` over the built-in defaults.

    Overrides are replaced, not extended: any ``--decay``/``--no-decay`` (or a ``--policy`` file,
    which holds its own preset and overrides) replaces the file's lists, so what a command line
    says is all that applies. Limits merge per name."""
    file_overrides = policy_file is None and not decay and not no_decay
    changes = dict(settings.limits)
    changes.update(parse_limit(value) for value in limits)
    return Effective(
        preset=preset or (settings.preset.value if settings.preset else Preset.KERNELS_ONLY.value),
        decay=(settings.decay or ()) if file_overrides else decay,
        no_decay=(settings.no_decay or ()) if file_overrides else no_decay,
        policy_file=policy_file,
        limits=dataclasses.replace(DEFAULT_LIMITS, **changes),
        baseline=None if no_baseline else (baseline or settings.baseline),
        strict=strict if strict is not None else bool(settings.strict),
    )


class ColorChoice(TextEnum):
    AUTO = "auto"
    ALWAYS = "always"
    NEVER = "never"


def use_color(choice: ColorChoice | str, is_tty: bool, environ: Mapping[str, str] | None = None) -> bool:
    """``auto`` colours only a terminal, and only when ``NO_COLOR`` is unset or empty (no-color.org)."""
    choice = ColorChoice(choice)
    if choice is ColorChoice.AUTO:
        environ = os.environ if environ is None else environ
        return is_tty and not environ.get("NO_COLOR")
    return choice is ColorChoice.ALWAYS
