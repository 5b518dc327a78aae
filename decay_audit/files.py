"""Writing the files decay-audit produces (reports, rule files, JUnit, pictures).

One atomic writer for all of them: a run that fails half-way leaves no half-written file
behind, and a user's existing file is replaced only by a complete one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

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
