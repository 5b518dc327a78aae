"""Rule and policy files: each validated against its target's shipped schema, JSON strict by name,
YAML by name, and every refusal one line naming the file and the problem."""

from __future__ import annotations

import json

import jsonschema
import pytest
from conftest import SAMPLES, run_cli

from decay_audit import scan
from decay_audit.errors import UsageError
from decay_audit.files import read_located, read_structured
from decay_audit.policy import load_policy_file
from decay_audit.rules import TargetName, get_target
from decay_audit.schemas import load_schema
from decay_audit.stages.rules import emit_rules, serialise_rules

SEED = str(SAMPLES / "seed.keras")

SCHEMAS = {
    TargetName.NATIVE: "native-rules",
    TargetName.KERAS: "keras-rules",
    TargetName.TF_KERAS: "tf-keras-rules",
    TargetName.MODEL_GARDEN: "model-garden-rules",
    TargetName.OPTAX: "optax-rules",
}


def _refusal(result, path) -> str:
    """The one stderr line of an exit-2 refusal, checked to name the file."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("decay-audit: error: ") and str(path) in lines[0], lines
    return lines[0]


def test_a_misspelled_key_is_an_error_naming_the_key_and_the_close_match(tmp_path):
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps({"exclude_var_name": ["bias"]}))
    line = _refusal(run_cli("check", SEED, "--target", "keras", "--rules", str(rules)), rules)
    assert line.endswith(f"{rules}: unknown key 'exclude_var_name' (did you mean 'exclude_var_names'?)")


@pytest.mark.parametrize(
    "target, document, wrong, meant",
    [
        ("tf-keras", {"exclude_var_names": [], "exclude_var_name": ["bias"]}, "exclude_var_name", "exclude_var_names"),
        (
            "model-garden",
            {"exclude_from_weight_decy": ["bias"]},
            "exclude_from_weight_decy",
            "exclude_from_weight_decay",
        ),
        ("optax", {"mask": [True], "path": ["a"]}, "path", "paths"),
        ("keras", {"exclude_positions": [{"layer": "dense", "idx": 0}]}, "idx", "index"),
    ],
)
def test_every_target_refuses_unknown_keys(tmp_path, target, document, wrong, meant):
    path = tmp_path / "rules.json"
    path.write_text(json.dumps(document))
    with pytest.raises(UsageError) as caught:
        get_target(target).parse(read_structured(path), str(path))
    assert f"unknown key {wrong!r}" in str(caught.value) and f"did you mean {meant!r}?" in str(caught.value)
    assert str(caught.value).startswith(str(path))


def test_native_and_policy_files_refuse_unknown_keys(tmp_path):
    native = tmp_path / "native.json"
    emitted = emit_rules(scan(SEED), "native").document
    native.write_text(json.dumps({**emitted, "policy": {**emitted["policy"], "overides": []}}))
    with pytest.raises(UsageError, match=r"unknown key 'overides' in policy \(did you mean 'overrides'\?\)"):
        get_target("native").parse(read_structured(native), str(native))
    policy = tmp_path / "policy.yaml"
    policy.write_text("preset: no-bias-norm\noverrides:\n  - {action: decay, selct: 'kind:embedding'}\n")
    line = _refusal(run_cli("scan", SEED, "--policy", str(policy)), policy)
    assert "unknown key 'selct' in overrides/0 (did you mean 'select'?)" in line


def test_a_trailing_comma_in_a_json_file_is_refused_with_line_and_column(tmp_path):
    text = '{\n  "exclude_var_names": [\n    "(^|/)bias(:0)?$",\n  ]\n}\n'
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)  # what the snippet's own json.load does with it
    rules = tmp_path / "rules.json"
    rules.write_text(text)
    line = _refusal(run_cli("check", SEED, "--target", "keras", "--rules", str(rules)), rules)
    assert "not valid JSON at line 4 column 3" in line and "trailing comma" in line
    # the same text is valid YAML, which is how it used to get in
    yaml_file = tmp_path / "rules.yaml"
    yaml_file.write_text(text)
    assert read_structured(yaml_file) == {"exclude_var_names": ["(^|/)bias(:0)?$"]}


def test_yaml_rule_files_are_accepted_and_checked_like_json(tmp_path):
    document = {"exclude_var_names": ["(^|/)bias(:0)?$"], "exclude_paths": ["dense2/kernel"]}
    as_json, as_yaml = tmp_path / "rules.json", tmp_path / "rules.yml"
    as_json.write_text(json.dumps(document))
    as_yaml.write_text("exclude_var_names:\n  - '(^|/)bias(:0)?$'\nexclude_paths: [dense2/kernel]\n")
    json_run = run_cli("check", SEED, "--target", "keras", "--rules", str(as_json), "--format", "json")
    yaml_run = run_cli("check", SEED, "--target", "keras", "--rules", str(as_yaml), "--format", "json")
    assert json_run.returncode == yaml_run.returncode == 1  # dense2/kernel is excluded against the policy
    assert json.loads(json_run.stdout)["result"] == json.loads(yaml_run.stdout)["result"]
    assert "excluded-against-policy" in json_run.stdout


def test_other_names_are_strict_json(tmp_path):
    """``rules -o rules.txt`` writes JSON, so any name but .yaml/.yml reads back as JSON, never YAML."""
    good, bad = tmp_path / "rules.txt", tmp_path / "rules.conf"
    good.write_text(json.dumps({"exclude_var_names": ["bias"]}))
    bad.write_text("exclude_var_names: [bias]\n")
    assert read_structured(good) == {"exclude_var_names": ["bias"]}
    with pytest.raises(
        UsageError, match=r"not valid JSON at line 1 column 1: .*only \.yaml/\.yml names are read as YAML"
    ):
        read_structured(bad)


@pytest.mark.parametrize(
    "name, text, problem",
    [
        ("dup.json", '{"exclude_var_names": ["bias"], "exclude_var_names": []}', "duplicate key 'exclude_var_names'"),
        ("dup.yaml", "exclude_var_names: [bias]\nexclude_var_names: []\n", "line 2 column 1: duplicate key"),
        ("nan.json", '{"mask": [NaN]}', "NaN is not JSON"),
        ("empty.yaml", "", "empty: a keras rule file is an object"),
        ("list.json", '["bias"]', "not a valid keras rule file at top level"),
        (
            "bomb.yaml",
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef")),
            "YAML aliases",
        ),
    ],
)
def test_what_json_or_yaml_readers_would_silently_take_is_refused(tmp_path, name, text, problem):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UsageError) as caught:
        get_target("keras").parse(read_structured(path), str(path))
    assert problem in str(caught.value) and str(caught.value).startswith(str(path))


def test_the_existing_guards_still_hold(tmp_path):
    large = tmp_path / "large.json"
    with large.open("wb") as handle:
        handle.truncate(64 * 1024 * 1024 + 1)
    with pytest.raises(UsageError, match="larger than"):
        read_structured(large)
    with pytest.raises(UsageError, match="not a regular file"):
        read_structured(tmp_path)
    with pytest.raises(UsageError, match="no such file"):
        load_policy_file(tmp_path / "missing.yaml")


@pytest.mark.parametrize("model", ["zoo.keras", "seed.keras"])
@pytest.mark.parametrize("target", list(TargetName))
def test_each_schema_accepts_what_rules_emits(tmp_path, model, target):
    """What ``rules`` writes (JSON, or YAML for .yaml), read back, against the schema on its own;
    for zoo.keras tf-keras and model-garden refuse to write, and the document they would write is checked."""
    emission = emit_rules(scan(SAMPLES / model), target)
    schema = load_schema(SCHEMAS[target])
    for name in ("rules.json", "rules.yaml"):
        path = tmp_path / name
        path.write_text(serialise_rules(emission.document, path))
        document = read_structured(path)
        assert document == emission.document
        jsonschema.validators.validator_for(schema)(schema, registry=_registry()).validate(document)
        get_target(target).parse(document, str(path))


def _registry():
    from referencing import Registry, Resource

    policy = load_schema("policy")
    return Registry().with_resource(policy["$id"], Resource.from_contents(policy))


def test_schemas_refuse_what_the_targets_cannot_apply():
    keras = load_schema("keras-rules")
    validator = jsonschema.validators.validator_for(keras)(keras)
    assert not validator.is_valid({})  # an empty object is a typo's result, not a rule
    assert not validator.is_valid({"exclude_var_names": "bias"})  # a string is not a list
    assert not validator.is_valid({"exclude_positions": [{"layer": "dense", "index": -1}]})
    assert validator.is_valid({"exclude_paths": ["dense/kernel"]})
    optax = load_schema("optax-rules")
    assert not jsonschema.validators.validator_for(optax)(optax).is_valid({"paths": ["a"]})  # no mask


def test_spans_of_json_values_are_found_by_tokens_not_text(tmp_path):
    """The key ``exclude_paths`` also appears as a pattern; its span is the pattern's, in its list."""
    path = tmp_path / "rules.json"
    path.write_text('{"exclude_paths": ["exclude_paths"],\n "exclude_var_names": [\n  "x", "exclude_paths"]}\n')
    located = read_located(path)
    assert located.spans[("exclude_var_names", 1)].line == 3
    assert located.spans[("exclude_var_names", 1)].column == 8
    assert located.spans[("exclude_var_names", 1)].end_column == 8 + len('"exclude_paths"')
    assert located.spans[("exclude_paths", 0)].line == 1 and located.spans[("exclude_paths", 0)].column == 20
