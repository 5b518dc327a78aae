"""decay-audit's own rule file: the policy, the model fingerprint, and a decision per variable path.

``verify --rules`` and ``check`` read it. The fingerprint (SHA-256 of every variable's
path, shape and dtype) makes a rule file for another model an input error, not a
silently wrong verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from decay_audit.errors import UsageError
from decay_audit.inventory import VariableRecord
from decay_audit.rules.files import validate
from decay_audit.rules.interface import Applied, Emitted, trainable

SCHEMA_VERSION = 1


def fingerprint(records: Sequence[VariableRecord]) -> str:
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.path):
        digest.update(f"{record.path}|{list(record.shape)}|{record.dtype}\n".encode())
    return "sha256:" + digest.hexdigest()


class NativeTarget:
    name = "native"
    description = "decay-audit rule file: policy, model fingerprint, decision per variable"
    source = "decay-audit (decay_audit/schemas/native-rules.schema.json)"

    def emit(self, records: Sequence[VariableRecord], decay: Sequence[bool], policy: dict | None = None,
             kinds: Sequence[str] | None = None) -> Emitted:
        variables = [{"path": r.path, "decay": bool(d), "trainable": r.trainable, **({"kind": k} if kinds else {})}
                     for r, d, k in zip(records, decay, kinds or [None] * len(records))]
        return Emitted({"schema_version": SCHEMA_VERSION, "fingerprint": fingerprint(records),
                        "policy": policy or {}, "variables": variables})

    def parse(self, document: Any, subject: str) -> dict[str, Any]:
        validate(document, "native-rules", subject)
        return document

    def from_var_names(self, names: Sequence[str]) -> Any:
        raise UsageError("--var-names", "the native target takes a rule file (--rules), not names")

    def apply(self, rule: dict[str, Any], records: Sequence[VariableRecord]) -> Applied:
        if rule["fingerprint"] != fingerprint(records):
            raise UsageError("rules", "fingerprint differs from the model's: the rule file was made for another model")
        decided = {v["path"]: v["decay"] for v in rule["variables"]}
        return Applied(frozenset(r.path for r in trainable(records) if not decided.get(r.path, False)))
