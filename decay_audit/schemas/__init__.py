"""JSON Schemas of decay-audit's machine-readable outputs, shipped with the package."""

from __future__ import annotations

import json
from importlib import resources


def load_schema(name: str) -> dict:
    """``load_schema("scan")`` → the schema of ``decay-audit scan --format json``."""
    return json.loads(resources.files(__package__).joinpath(f"{name}.schema.json").read_text("utf-8"))
