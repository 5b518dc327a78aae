"""The files decay-audit reads from users (rule and policy files) and writes for them.

Reading: JSON or YAML, bounded in size, never blocking on a pipe, validated against the
shipped schema. Writing: one atomic writer for reports, rule files, JUnit and pictures, so a
run that fails half-way leaves no half-written file behind, and a user's existing file is
replaced only by a complete one.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from decay_audit.errors import UsageError


def write_atomically(path: str | os.PathLike, data: str | bytes, option: str = "--output") -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, then rename.

    ``option`` names the command-line option the path came from, for the one-line error."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UsageError(str(path), f"directory of {option} does not exist")
    handle, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if isinstance(data, bytes):
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
        else:
            with os.fdopen(handle, "w", encoding="utf-8") as stream:
                stream.write(data)
        os.replace(temp_name, path)
    except OSError as exc:
        Path(temp_name).unlink(missing_ok=True)
        raise UsageError(str(path), f"cannot write ({exc.strerror or exc})") from None


MAX_RULE_FILE_BYTES = 64 * 1024 * 1024


def read_structured(path: Path) -> Any:
    """JSON, or YAML (safe loader only: no object construction from tags)."""
    path = Path(path)
    try:
        # Opened without blocking and checked through the descriptor: open() on a named pipe
        # with no writer never returns.
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError:
        raise UsageError(str(path), "no such file") from None
    status = os.fstat(descriptor)
    if not stat.S_ISREG(status.st_mode):
        os.close(descriptor)
        raise UsageError(str(path), "not a regular file (a directory, pipe or device)")
    with os.fdopen(descriptor, "rb") as handle:
        if status.st_size > MAX_RULE_FILE_BYTES:
            raise UsageError(str(path), f"larger than {MAX_RULE_FILE_BYTES} bytes")
        text = handle.read(MAX_RULE_FILE_BYTES + 1).decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        pass
    import yaml

    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UsageError(str(path), f"neither valid JSON nor YAML ({first})") from None


def validate(document: Any, schema_name: str, path: Path | str) -> None:
    import jsonschema

    from decay_audit.schemas import load_schema

    try:
        jsonschema.validate(document, load_schema(schema_name))
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "top level"
        raise UsageError(str(path), f"not a valid {schema_name} file at {where}: {exc.message}") from None
