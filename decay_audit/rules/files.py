"""Reading and validating user-supplied rule and policy files (JSON or YAML)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decay_audit.errors import UsageError

MAX_RULE_FILE_BYTES = 64 * 1024 * 1024


def read_structured(path: Path) -> Any:
    """JSON, or YAML (safe loader only: no object construction from tags)."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(str(path), "no such file")
    if path.stat().st_size > MAX_RULE_FILE_BYTES:
        raise UsageError(str(path), f"larger than {MAX_RULE_FILE_BYTES} bytes")
    text = path.read_text(encoding="utf-8", errors="replace")
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
