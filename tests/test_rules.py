"""Every target and preset: the emitted rule, applied with the tool's own semantics, selects
exactly the intended set; for Keras 3 and tf_keras, by running a real optimizer and watching."""

from __future__ import annotations

import collections
import json

import builders
import keras
import numpy as np
import pytest
from conftest import SAMPLES, run_cli

from decay_audit import scan
from decay_audit.errors import UsageError
from decay_audit.findings import FindingKind
from decay_audit.policy import Preset, build_policy
from decay_audit.rules import TargetName, get_target
from decay_audit.stages.rules import check_rules, emit_rules

PRESETS = [p.value for p in Preset]


@pytest.fixture(scope="module")
def builtin_zoo(tmp_path_factory):
    model = builders.zoo_model(custom_layers=False)
    path = tmp_path_factory.mktemp("builtin_zoo") / "zoo.keras"
    model.save(path)
    return path


def _intended_excluded(report):
    return {v.record.path for v in report.variables if v.record.trainable and not v.decision.decay}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("target", [t.value for t in TargetName])
def test_emitted_rule_selects_exactly_the_intended_set(builtin_zoo, preset, target):
    report = scan(builtin_zoo, preset=preset)
    emission = emit_rules(report, target)
    assert emission.ok, (emission.wrongly_selected, emission.unexpressible)
    tool = get_target(target)
    applied = tool.apply(
        tool.parse(json.loads(json.dumps(emission.document)), "rule"), [v.record for v in report.variables]
    )
    assert applied.excluded == _intended_excluded(report)


def test_presets_differ_where_their_conventions_do(builtin_zoo):
    def decayed(preset):
        return {v.record.path for v in scan(builtin_zoo, preset=preset).variables if v.decision.decay}

    kernels, no_bias_norm, ndim, everything = (decayed(p) for p in PRESETS)
    assert "token_embedding/embeddings" in no_bias_norm and "token_embedding/embeddings" not in kernels
    assert "mha/query/bias" in ndim and "mha/query/bias" not in no_bias_norm  # 2-D biases under ndim
    assert "stem_prelu/alpha" in everything and "stem_bn/moving_mean" not in everything
    assert kernels < no_bias_norm < everything


def moved_by_real_optimizer(model, optimizer) -> collections.Counter:
    """Apply zero gradients: with fresh AdamW moments the update is exactly the decay.
    Every variable is first set non-zero, since decay cannot move a zero-initialised bias.
    Paths are counted, not collected: a model may hold two variables under one path (keras_hub T5).
    Variables Keras overwrites with their gradient (float8 scales) are left out of the count: the
    optimizer assigns them the (zero) gradient and never decays them (BaseOptimizer.apply)."""
    everything = model.trainable_variables
    variables = [v for v in everything if not getattr(v, "overwrite_with_gradient", False)]
    rng = np.random.default_rng(0)
    for variable in variables:
        variable.assign(rng.uniform(0.5, 1.5, size=variable.shape).astype(variable.dtype))
    before = [np.array(v.numpy()) for v in variables]
    optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in everything])
    return collections.Counter(v.path for v, old in zip(variables, before) if not np.array_equal(v.numpy(), old))


def _decayed_by_real_optimizer(model, optimizer) -> set[str]:
    return set(moved_by_real_optimizer(model, optimizer))


@pytest.mark.parametrize("preset", PRESETS)
def test_keras_rule_on_a_real_keras_optimizer(builtin_zoo, preset):
    report = scan(builtin_zoo, preset=preset)
    rules = emit_rules(report, "keras").document
    model = keras.saving.load_model(builtin_zoo)
    optimizer = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    apply_keras_rule(model, rules, optimizer)
    expected = {v.record.path for v in report.variables if v.decision.decay}
    assert _decayed_by_real_optimizer(model, optimizer) == expected


def test_optax_mask_is_aligned_with_trainable_variables(builtin_zoo):
    document = emit_rules(scan(builtin_zoo), "optax").document
    model = keras.saving.load_model(builtin_zoo)
    assert document["paths"] == [v.path for v in model.trainable_variables]
    assert document["mask"] == [
        v.name in ("kernel", "depthwise_kernel", "pointwise_kernel", "recurrent_kernel")
        for v in model.trainable_variables
    ]


def test_tf_keras_rule_on_a_real_tf_keras_optimizer(tf_keras_files):
    import tf_keras

    model, paths = tf_keras_files
    report = scan(paths["saved_model"], preset="no-bias-norm")
    patterns = emit_rules(report, "tf-keras").document["exclude_var_names"]
    optimizer = tf_keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=patterns)
    variables = model.trainable_variables
    for variable in variables:
        variable.assign(np.full(variable.shape, 0.7, variable.dtype.as_numpy_dtype))
    before = [v.numpy().copy() for v in variables]
    optimizer.apply_gradients([(np.zeros(v.shape, v.dtype.as_numpy_dtype), v) for v in variables])
    moved = {v.name.removesuffix(":0") for v, old in zip(variables, before) if not np.array_equal(v.numpy(), old)}
    assert moved == {v.record.path for v in report.variables if v.decision.decay}


def apply_keras_rule(model, rules, optimizer):
    """What the emitted snippet does (decay_audit.rules.keras3.SNIPPET), against a live model."""
    owned = {}
    for v in model.weights:
        owned.setdefault(v.path.rpartition("/")[0], []).append(v)
    var_list = [
        v
        for v in model.trainable_variables
        if v.path in set(rules["exclude_paths"]) or v.path.rpartition("/")[0] in set(rules.get("exclude_layers", []))
    ]
    var_list += [owned[p["layer"]][p["index"]] for p in rules.get("exclude_positions", [])]
    optimizer.exclude_from_weight_decay(var_list=var_list, var_names=rules["exclude_var_names"] or None)


def test_snippet_text_is_what_the_tests_apply():
    from decay_audit.rules.keras3 import SNIPPET

    assert 'owned[p["layer"]][p["index"]]' in SNIPPET and "exclude_layers" in SNIPPET


@pytest.mark.parametrize("preset", ["kernels-only", "no-bias-norm"])
def test_custom_classes_are_excluded_by_layer_path_and_position(tmp_path, preset):
    """The project's own zoo.keras: its custom classes' leaves are unknown (stored by position),
    but variable.path names their layers on every backend: a real AdamW step decays exactly the policy's set."""
    out = tmp_path / "r.json"
    result = run_cli("rules", str(SAMPLES / "zoo.keras"), "--target", "keras", "--preset", preset, "--output", str(out))
    assert result.returncode == 0, result.stderr
    rules = json.loads(out.read_text())
    assert rules["exclude_layers"] or rules["exclude_positions"]
    report = scan(SAMPLES / "zoo.keras", preset=preset)
    model = keras.saving.load_model(SAMPLES / "zoo.keras")  # builders registered the sample classes
    optimizer = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    apply_keras_rule(model, rules, optimizer)
    owned_paths = {}
    for record in (v.record for v in report.variables):
        owned_paths.setdefault(record.path.rpartition("/")[0], []).append(record.path)
    live_paths = {}
    for v in model.weights:
        live_paths.setdefault(v.path.rpartition("/")[0], []).append(v.path)
    # The scan's var_N stands for the live leaf at the same position of the same layer.
    live_of = {p: live_paths[owner][i] for owner, paths in owned_paths.items() for i, p in enumerate(paths)}
    expected = {live_of[v.record.path] for v in report.variables if v.decision.decay}
    assert _decayed_by_real_optimizer(model, optimizer) == expected


@pytest.mark.parametrize(
    "target,backend,names,dead,decayed_against",
    [
        # Keras 3 on JAX/torch matches the leaf: "LayerNorm" and a Keras 2 "dense2" filter match nothing.
        ("keras", "jax", ["LayerNorm", "bias"], "LayerNorm", "ln/gamma"),
        ("keras", "jax", ["dense2"], "dense2", "head/bias"),
        ("keras", "tensorflow", ["LayerNorm", "bias"], "LayerNorm", "ln/gamma"),
        # BERT's list against variables named LayerNorm under full-name semantics.
        ("model-garden", None, ["layer_norm", "bias"], "layer_norm", "ln/gamma"),
        ("tf-keras", None, ["layer_norm", "bias"], "layer_norm", "ln/beta"),
    ],
)
def test_check_reproduces_real_failures(builtin_zoo, target, backend, names, dead, decayed_against):
    report = scan(builtin_zoo, preset="no-bias-norm")
    tool = get_target(target, backend)
    result = check_rules(report, target, tool.from_var_names(names), keras_backend=backend)
    kinds = {(f.kind, f.subject) for f in result.findings}
    assert (FindingKind.DEAD_PATTERN, dead) in kinds
    assert (FindingKind.DECAYED_AGAINST_POLICY, decayed_against) in kinds


def test_keras2_dense2_filter_under_tensorflow_backend_excludes_a_kernel(seed):
    """On the TF backend Keras 3 searches 'dense2/kernel:0': the Keras 2 filter is over-broad."""
    _, paths = seed
    report = scan(paths["keras"])
    result = check_rules(
        report, "keras", get_target("keras", "tensorflow").from_var_names(["dense2"]), keras_backend="tensorflow"
    )
    kinds = {(f.kind, f.subject) for f in result.findings}
    assert (FindingKind.OVER_BROAD, "dense2") in kinds
    assert (FindingKind.EXCLUDED_AGAINST_POLICY, "dense2/kernel") in kinds
    assert (FindingKind.DECAYED_AGAINST_POLICY, "dense1/bias") in kinds


def test_keras_semantics_match_the_tensorflow_optimizer_for_unanchored_names(seed):
    """Pins the backend quirk: a real TF-backend AdamW with var_names=["dense2"] leaves dense2 alone."""
    model, _ = seed
    optimizer = keras.optimizers.AdamW(learning_rate=0.1, weight_decay=0.5)
    optimizer.exclude_from_weight_decay(var_names=["dense2"])
    moved = _decayed_by_real_optimizer(model, optimizer)
    assert keras.backend.backend() == "tensorflow"
    assert moved == {"dense1/kernel", "dense1/bias"}


def test_over_broad_pattern_is_reported(builtin_zoo):
    report = scan(builtin_zoo)
    result = check_rules(report, "keras", get_target("keras").from_var_names(["kernel|bias|gamma|beta"]))
    over = [f for f in result.findings if f.kind is FindingKind.OVER_BROAD]
    assert over and "kernel" in over[0].detail


def test_check_cli_exit_codes(tmp_path):
    seed = str(SAMPLES / "seed.keras")
    good = run_cli("rules", seed, "--target", "keras", "--output", str(tmp_path / "good.json"))
    assert good.returncode == 0
    assert run_cli("check", seed, "--target", "keras", "--rules", str(tmp_path / "good.json")).returncode == 0
    bad = run_cli("check", seed, "--target", "keras", "--keras-backend", "jax", "--var-names", "dense2")
    assert bad.returncode == 1 and "dead-pattern" in bad.stdout
    tf_bad = run_cli("check", seed, "--target", "keras", "--var-names", "dense2")
    assert tf_bad.returncode == 1 and "over-broad" in tf_bad.stdout
    (tmp_path / "regex.json").write_text(json.dumps({"exclude_var_names": ["("]}))
    invalid = run_cli("check", seed, "--target", "keras", "--rules", str(tmp_path / "regex.json"))
    assert invalid.returncode == 2 and len(invalid.stderr.strip().splitlines()) == 1
    assert str(tmp_path / "regex.json") in invalid.stderr
    native = tmp_path / "native.json"
    assert run_cli("rules", str(SAMPLES / "zoo.keras"), "--target", "native", "-o", str(native)).returncode == 0
    other = run_cli("check", seed, "--target", "native", "--rules", str(native))
    assert other.returncode == 2 and "another model" in other.stderr
    assert run_cli("check", seed, "--target", "nope", "--var-names", "x").returncode == 2
    assert run_cli("rules", seed, "--target", "keras", "--preset", "nope").returncode == 2


def test_saved_optimizer_with_weight_decay_is_reported(tmp_path):
    model = builders.seed_model()
    model.compile(optimizer=keras.optimizers.AdamW(1e-3, weight_decay=0.01), loss="mse")
    path = tmp_path / "compiled.keras"
    model.save(path)
    table = run_cli("scan", str(path))
    assert "exclusions are not saved" in table.stdout
    checked = run_cli("check", str(path), "--target", "keras", "--var-names", "^bias$")
    assert checked.returncode == 1 and "saved-optimizer-decays-all" in checked.stdout


def test_policy_file_overrides_and_findings(tmp_path, builtin_zoo):
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "preset: kernels-only\noverrides:\n  - {action: decay, select: 'kind:embedding'}\n"
        "  - {action: no-decay, select: 'head/*'}\n  - {action: decay, select: 're:^nothing$'}\n"
    )
    from decay_audit.policy import load_policy_file

    report = scan(builtin_zoo, preset=load_policy_file(policy))
    decided = {v.record.path: v.decision.decay for v in report.variables}
    assert decided["token_embedding/embeddings"] is True and decided["head/kernel"] is False
    assert report.policy_findings.dead_overrides == ("--decay re:^nothing$",)
    conflicted = scan(builtin_zoo, preset=build_policy(decay=["kind:bias"], no_decay=["head/*"]))
    assert any(c.startswith("head/bias") for c in conflicted.policy_findings.conflicts)
    bad = tmp_path / "bad.yaml"
    bad.write_text("preset: nope\n")
    result = run_cli("scan", str(SAMPLES / "seed.keras"), "--policy", str(bad))
    assert result.returncode == 2 and str(bad) in result.stderr
    with pytest.raises(UsageError):
        build_policy(no_decay=["re:("])


@pytest.mark.parametrize("target", ["keras", "tf-keras", "optax"])
def test_snippet_opens_the_written_rule_file(tmp_path, target):
    out = tmp_path / "rules.json"
    result = run_cli("rules", str(SAMPLES / "seed.keras"), "--target", target, "--output", str(out), "--snippet")
    assert result.returncode == 0, result.stderr
    assert f"json.load(open({str(out)!r}))" in result.stderr
    assert "RULES_PATH" not in result.stderr and result.stdout == ""


def test_rule_snippet_names_the_rule_file_and_is_empty_for_native(tmp_path):
    from decay_audit.stages.rules import rule_snippet

    report = scan(SAMPLES / "seed.keras")
    keras_snippet = rule_snippet(emit_rules(report, "keras"), tmp_path / "r.json")
    assert f"json.load(open({str(tmp_path / 'r.json')!r}))" in keras_snippet and "RULES_PATH" not in keras_snippet
    assert "json.load(open('rules.json'))" in rule_snippet(emit_rules(report, "optax"), None)
    assert rule_snippet(emit_rules(report, "native"), tmp_path / "r.json") == ""


def test_snippet_goes_to_stderr_or_its_own_file_never_stdout(tmp_path):
    seed = str(SAMPLES / "seed.keras")
    out = tmp_path / "rules.json"
    to_stderr = run_cli("rules", seed, "--target", "keras", "-o", str(out), "--snippet")
    assert to_stderr.returncode == 0, to_stderr.stderr
    assert to_stderr.stdout == ""  # the rule went to its file; stdout holds nothing else
    assert f"json.load(open({str(out)!r}))" in to_stderr.stderr
    piped = run_cli("rules", seed, "--target", "keras", "--snippet")
    assert json.loads(piped.stdout)["exclude_var_names"]  # stdout is the rule file alone
    assert "json.load(open('rules.json'))" in piped.stderr
    snippet = tmp_path / "apply_rules.py"
    to_file = run_cli("rules", seed, "--target", "keras", "-o", str(out), "--snippet-output", str(snippet))
    assert to_file.returncode == 0, to_file.stderr
    assert to_file.stdout == "" and to_file.stderr == ""
    assert f"json.load(open({str(out)!r}))" in snippet.read_text()
    out.unlink()
    missing = tmp_path / "no" / "apply.py"
    refused = run_cli("rules", seed, "--target", "keras", "-o", str(out), "--snippet-output", str(missing))
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert not out.exists()  # nothing written when the snippet cannot be
    native = run_cli("rules", seed, "--target", "native", "-o", str(out), "--snippet-output", str(snippet))
    assert native.returncode == 2 and "snippet" in native.stderr and not out.exists()


EXPONENTIAL = r"(.|.|.|.)*z$"
"""Fails on every name after trying 4**len(name) ways: hours on 'dense1/kernel:0'."""


@pytest.mark.parametrize("target", ["keras", "tf-keras", "model-garden"])
def test_a_backtracking_rule_regex_is_one_error_naming_it_within_the_budget(monkeypatch, target):
    import time

    from decay_audit import user_regex
    from decay_audit.errors import LimitExceededError

    monkeypatch.setattr(user_regex, "REGEX_SECONDS", 1.0)
    report = scan(SAMPLES / "seed.keras")
    rule = get_target(target).from_var_names(["bias", EXPONENTIAL])
    start = time.perf_counter()
    with pytest.raises(LimitExceededError, match=r"\(\.\|\.\|\.\|\.\)\*z\$.* ran over 1 s on 4 variable names"):
        check_rules(report, target, rule)
    # Margin: 200 runs (the three targets in turn) on the 2-core machine under load ended after
    # median 1.000 s, max 1.009 s, against this 5 s bound for a 1 s budget.
    assert time.perf_counter() - start < 5
    # the timer and handler are put back: a fast rule afterwards runs as before
    assert check_rules(report, target, get_target(target).from_var_names(["bias"])) is not None
    import signal

    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) == signal.SIG_DFL


def test_a_backtracking_re_selector_in_a_policy_is_one_error(monkeypatch):
    from decay_audit import user_regex
    from decay_audit.errors import LimitExceededError

    monkeypatch.setattr(user_regex, "REGEX_SECONDS", 1.0)
    with pytest.raises(LimitExceededError, match="ran over 1 s"):
        scan(SAMPLES / "seed.keras", preset=build_policy("kernels-only", no_decay=[f"re:{EXPONENTIAL}"]))
