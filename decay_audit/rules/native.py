"""decay-audit's own rule file: the policy, the model fingerprint, and a decision per variable path.

``verify --rules`` and ``check`` read it. The fingerprint (SHA-256 of every variable's
path, shape and dtype) makes a rule file for another model an input error, not a
silently wrong verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, cast

from decay_audit.errors import OptionError, UsageError
from decay_audit.files import validate
from decay_audit.inventory import VariableRecord
from decay_audit.results import Emitted, ScanReport
from decay_audit.rules.interface import Applied, trainable

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

    def emit(self, report: ScanReport) -> Emitted:
        records = [v.record for v in report.variables]
        variables = [
            {
                "path": v.record.path,
                "decay": bool(v.decision.decay),
                "trainable": v.record.trainable,
                "kind": v.classification.kind.value,
            }
            for v in report.variables
        ]
        return Emitted(
            {
                "schema_version": SCHEMA_VERSION,
                "fingerprint": fingerprint(records),
                "policy": report.policy.to_dict(),
                "variables": variables,
            }
        )

    def parse(self, document: Any, subject: str) -> dict[str, Any]:
        validate(document, "native-rules", subject)
        return cast(dict[str, Any], document)  # the schema requires an object

    def from_var_names(self, names: Sequence[str]) -> Any:
        raise OptionError("var_names", "the native target takes a rule file (--rules), not names")

    def apply(self, rule: dict[str, Any], records: Sequence[VariableRecord]) -> Applied:
        if rule["fingerprint"] != fingerprint(records):
            raise UsageError("rules", "fingerprint differs from the model's: the rule file was made for another model")
        decided = {v["path"]: v["decay"] for v in rule["variables"]}
        return Applied(frozenset(r.path for r in trainable(records) if not decided.get(r.path, False)))
