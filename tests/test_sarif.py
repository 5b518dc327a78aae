"""``--format sarif``: valid against the official SARIF 2.1.0 schema (shipped, offline), one rule per
finding type, and locations a code-scanning tool can file the alert under."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jsonschema
import pytest
from conftest import REPO, SAMPLES, run_cli

from decay_audit.findings import RULES, FindingKind, Outcome, rule_for
from decay_audit.report import formats_for
from decay_audit.report.sarif import function_line
from decay_audit.schemas import load_sarif_schema

TESTS = Path(__file__).resolve().parent


def _valid(text: str) -> dict:
    document = json.loads(text)
    validator = jsonschema.Draft4Validator(
        load_sarif_schema(), format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER
    )
    validator.validate(document)
    assert document["version"] == "2.1.0" and len(document["runs"]) == 1
    return document


def _results(document: dict) -> list[dict]:
    return document["runs"][0]["results"]


def _rule_names(document: dict) -> dict[str, str]:
    return {rule["id"]: rule["name"] for rule in document["runs"][0]["tool"]["driver"]["rules"]}


def test_shipped_schema_is_the_oasis_one_and_rejects_broken_logs():
    schema = load_sarif_schema()
    assert schema["title"].startswith("Static Analysis Results Format (SARIF) Version 2.1.0")
    assert "docs.oasis-open.org/sarif" in schema["id"]
    validator = jsonschema.Draft4Validator(schema)
    assert not list(validator.iter_errors({"version": "2.1.0", "runs": []}))
    assert list(validator.iter_errors({"version": "2.1.0", "runs": [{"tool": {}}]}))  # driver missing
    assert list(validator.iter_errors({"version": "2.1.0", "runs": [], "extra": 1}))


def test_every_finding_type_has_one_rule():
    names = {rule.name for rule in RULES}
    assert len(names) == len(RULES) and len({rule.id for rule in RULES}) == len(RULES)
    assert {rule_for(kind).name for kind in FindingKind} <= names  # every finding kind has a rule (KeyError if not)
    failing = [outcome for outcome in Outcome if outcome is not Outcome.OK]
    own_rules = {rule_for(outcome).name for outcome in failing}
    assert "verify-mismatch" not in own_rules, "a new verify outcome needs its own SARIF rule"
    assert len(own_rules) == len(failing)
    for wanted in (
        "dead-pattern",
        "over-broad-pattern",
        "decayed-against-policy",
        "double-decay",
        "never-switched-on",
        "saved-optimizer-decays-all",
        "low-confidence",
        "conflicting-evidence",
    ):
        assert wanted in names
    for subject in ("scan", "scan-many", "check", "verify"):
        assert "sarif" in formats_for(subject)


def test_scan_sarif_low_confidence_located_in_the_model_file():
    result = run_cli("scan", "sample_models/subclassed.keras", "--format", "sarif", "--strict", cwd=REPO)
    assert result.returncode == 1
    assert "low-confidence" in result.stderr  # the --strict summary goes to stderr, never into the log
    document = _valid(result.stdout)
    json_report = json.loads(run_cli("scan", "sample_models/subclassed.keras", "--format", "json", cwd=REPO).stdout)
    low = [v["path"] for v in json_report["variables"] if v["confidence"] == "low"]
    names = _rule_names(document)
    flagged = [
        r["locations"][0]["logicalLocations"][0]["name"]
        for r in _results(document)
        if names[r["ruleId"]] == "low-confidence"
    ]
    assert sorted(flagged) == sorted(low) and low
    for result_object in _results(document):
        location = result_object["locations"][0]["physicalLocation"]
        assert location["artifactLocation"] == {"uri": "sample_models/subclassed.keras", "uriBaseId": "%SRCROOT%"}
        assert location["region"]["startLine"] == 1
        assert result_object["partialFingerprints"]["decayAudit/v1"]


def test_scan_sarif_clean_model_has_no_results(tmp_path):
    document = _valid(run_cli("scan", str(SAMPLES / "zoo.keras"), "--format", "sarif", cwd=tmp_path).stdout)
    assert _results(document) == []
    assert document["runs"][0]["artifacts"][0]["location"]["uri"].startswith("file:///")  # outside the cwd


def test_check_sarif_pattern_findings_sit_in_the_rule_file(tmp_path):
    shutil.copy(SAMPLES / "zoo.keras", tmp_path / "zoo.keras")
    (tmp_path / "rules.json").write_text(json.dumps({"exclude_var_names": ["LayerNorm", "kernel"]}))
    result = run_cli(
        "check",
        "zoo.keras",
        "--target",
        "keras",
        "--keras-backend",
        "jax",
        "--rules",
        "rules.json",
        "--format",
        "sarif",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    document = _valid(result.stdout)
    names = _rule_names(document)
    by_rule: dict[str, list[dict]] = {}
    for item in _results(document):
        by_rule.setdefault(names[item["ruleId"]], []).append(item)
    (dead,) = by_rule["dead-pattern"]
    assert dead["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "rules.json"
    assert dead["locations"][0]["logicalLocations"][0]["name"] == "LayerNorm"
    assert dead["relatedLocations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "zoo.keras"
    assert "kernel" in [i["locations"][0]["logicalLocations"][0]["name"] for i in by_rule["over-broad-pattern"]]
    decayed = by_rule["decayed-against-policy"]
    assert decayed and all(
        i["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == "zoo.keras" for i in decayed
    )
    table = run_cli(
        "check", "zoo.keras", "--target", "keras", "--keras-backend", "jax", "--rules", "rules.json", cwd=tmp_path
    )
    assert table.stdout.count("decayed-against-policy") == len(decayed)  # the same findings as the table


def test_check_sarif_saved_optimizer(tmp_path):
    import builders
    import keras

    model = builders.seed_model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01), loss="mse")
    model.save(tmp_path / "compiled.keras")
    result = run_cli(
        "check",
        "compiled.keras",
        "--target",
        "keras",
        "--var-names",
        "(^|/)bias(:0)?$",
        "--format",
        "sarif",
        cwd=tmp_path,
    )
    document = _valid(result.stdout)
    names = _rule_names(document)
    assert [names[r["ruleId"]] for r in _results(document)] == ["saved-optimizer-decays-all"]
    assert result.returncode == 1


def test_verify_sarif_points_at_the_setup_function(tmp_path):
    setup = tmp_path / "train.py"
    setup.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(TESTS)!r}); sys.path.insert(0, {str(SAMPLES)!r})\n"
        "import verify_setups\n"
        "\n"
        "\n"
        "def make():\n"
        "    return verify_setups.method_1()\n"
    )
    assert function_line(setup, "make") == 6
    result = run_cli(
        "verify", "--setup", "train.py:make", "--preset", "no-bias-norm", "--format", "sarif", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    document = _valid(result.stdout)
    names = _rule_names(document)
    found = {(names[r["ruleId"]], r["locations"][0]["logicalLocations"][0]["name"]) for r in _results(document)}
    assert ("double-decay", "dense1/kernel") in found  # Adam(weight_decay) + L2 in the loss (FACTS method 1)
    for item in _results(document):
        location = item["locations"][0]["physicalLocation"]
        assert location["artifactLocation"]["uri"] == "train.py" and location["region"]["startLine"] == 6


def test_sarif_escapes_hostile_names(tmp_path):
    from decay_audit.report.sarif import Result, physical, sarif_log

    log = sarif_log([Result("low-confidence", "\x1b[31mred\u202e", physical(tmp_path / "m.keras"), "a\x00b")])
    assert "\x1b" not in log and "\u202e" not in log
    assert _results(_valid(log))[0]["locations"][0]["logicalLocations"][0]["name"] == "a\x00b"


@pytest.mark.parametrize("fmt", ["csv", "markdown"])
def test_formats_a_command_does_not_have_are_usage_errors(fmt):
    result = run_cli("check", str(SAMPLES / "seed.keras"), "--target", "keras", "--var-names", "bias", "--format", fmt)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
