"""The pytest plugin, run by pytest's own ``pytester``: collection without the probe, one test per
variable once the names are cached, -k, -x, marker, fixture, a set-up that raises.

Most runs are in-process (TensorFlow is already imported here, so each run costs only its probe);
the collection checks run in a subprocess, where importing TensorFlow would show.
"""

from __future__ import annotations

import json
from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import tomllib
from conftest import REPO, SAMPLES

from decay_audit.integrations.pytest_plugin import AuditSpec, _cache_key, _fingerprint

pytest_plugins = ("pytester",)
TESTS = Path(__file__).resolve().parent

SETUP = f"""
import sys
sys.path.insert(0, {str(TESTS)!r}); sys.path.insert(0, {str(SAMPLES)!r})
import keras, verify_setups


def make():
    return verify_setups.compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1))


def leaky():
    return verify_setups.compiled(keras.optimizers.AdamW(1e-2, weight_decay=0.1), exclude=False)


def helper():
    with open("calls.txt", "a") as calls:
        calls.write("broken\\n")
    return 1 / 0


def broken():
    return helper()
"""


def _plugin_args(cache: bool = True) -> list[str]:
    """Load the plugin by name unless the installed package's entry point already does. The runs
    keep pytest's cache (in the pytester directory): it is where the variable names come from."""
    installed = any(ep.value == "decay_audit.integrations.pytest_plugin" for ep in entry_points(group="pytest11"))
    return ([] if cache else ["-p", "no:cacheprovider"]) + (
        [] if installed else ["-p", "decay_audit.integrations.pytest_plugin"]
    )


def _cache_names(project: pytest.Pytester, setup: str, names: list[str]) -> None:
    """Write the cache entry a run that probed ``setup`` would leave, with these names."""
    spec = AuditSpec.make(setup, project.path)
    entry = project.path / ".pytest_cache" / "v" / _cache_key(spec)
    entry.parent.mkdir(parents=True, exist_ok=True)
    entry.write_text(json.dumps({"setup": spec.setup, "fingerprint": _fingerprint(spec), "variables": names}))


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(train=SETUP)
    return pytester


def test_entry_point_is_declared_and_importable():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["pytest11"]["decay_audit"]
    module = import_module(target)
    assert callable(module.pytest_addoption) and callable(module.pytest_collection_modifyitems)


COLLECTION_GUARD = """
import sys


def pytest_collection_finish(session):
    assert "tensorflow" not in sys.modules and "keras" not in sys.modules, "collection imported TensorFlow"
"""

MARKED = """
import pytest

@pytest.mark.decay_audit(setup="train.py:leaky")
def test_each(decay_audit):
    pass
"""


def test_collection_imports_no_tensorflow_and_runs_no_setup(project):
    """train.py imports keras at its top: collecting it, or calling make(), would import TensorFlow."""
    project.makeconftest(COLLECTION_GUARD)
    project.makepyfile(test_marked=MARKED)
    first = project.runpytest_subprocess(
        "--collect-only", "-q", "--decay-audit-setup", "train.py:make", *_plugin_args()
    )
    assert first.ret == 0, first.stdout.str() + first.stderr.str()
    first.stdout.fnmatch_lines(
        [
            "test_marked.py::test_each[[]all-variables[]]",
            "decay-audit?train.py:make?::all-variables",
            "2 tests collected*",
        ]
    )
    _cache_names(project, "train.py:make", ["dense1/kernel", "dense1/bias"])
    _cache_names(project, "train.py:leaky", ["dense1/kernel", "dense1/bias", "dense2/kernel", "dense2/bias"])
    named = project.runpytest_subprocess(
        "--collect-only", "-q", "--decay-audit-setup", "train.py:make", "-k", "bias", *_plugin_args()
    )
    assert named.ret == 0, named.stdout.str() + named.stderr.str()
    named.stdout.fnmatch_lines(
        [
            "test_marked.py::test_each[[]dense1/bias[]]",
            "test_marked.py::test_each[[]dense2/bias[]]",
            "decay-audit?train.py:make?::dense1/bias",
            "3/6 tests collected (3 deselected)*",
        ]
    )
    assert not (project.path / "calls.txt").exists()


def test_first_run_is_one_test_then_one_test_per_variable(project):
    first = project.runpytest_inprocess("--decay-audit-setup", "train.py:leaky", "-v", *_plugin_args())
    first.assert_outcomes(failed=1)
    first.stdout.fnmatch_lines(
        [
            "*decay-audit?train.py:leaky?::all-variables FAILED*",
            "2 of 4 variables get the wrong weight decay:",
            "  dense1/bias: decayed-against-intent: expected no decay*",
            "decay-audit: 1 set-up(s) collected as one all-variables test*",
        ]
    )
    result = project.runpytest_inprocess("--decay-audit-setup", "train.py:leaky", "-v", *_plugin_args())
    result.assert_outcomes(passed=2, failed=2)  # kernels decay as meant; both biases decay against the policy
    result.stdout.fnmatch_lines(
        [
            "*decay-audit?train.py:leaky?::dense1/kernel PASSED*",
            "*decay-audit?train.py:leaky?::dense1/bias FAILED*",
            "dense1/bias: decayed-against-intent: expected no decay*[[]intent: bias is excluded under kernels-only[]]*",
        ]
    )
    assert "Traceback" not in result.stdout.str()  # the failure is the weight and the verdict, no stack
    assert "all-variables" not in result.stdout.str()
    good = project.runpytest_inprocess("--decay-audit-setup", "train.py:make", *_plugin_args())
    good.assert_outcomes(passed=1)
    uncached = project.runpytest_inprocess("--decay-audit-setup", "train.py:leaky", *_plugin_args(cache=False))
    uncached.assert_outcomes(failed=1)
    uncached.stdout.fnmatch_lines(["decay-audit: 1 set-up(s) collected as one*the cacheprovider plugin is off*"])


def test_k_selects_weights_and_x_stops_at_the_first_wrong_one(project):
    project.runpytest_inprocess("--decay-audit-setup", "train.py:leaky", *_plugin_args()).assert_outcomes(failed=1)
    selected = project.runpytest_inprocess("--decay-audit-setup", "train.py:leaky", "-k", "dense2", *_plugin_args())
    selected.assert_outcomes(passed=1, failed=1, deselected=2)
    stopped = project.runpytest_inprocess("--decay-audit-setup", "train.py:leaky", "-x", *_plugin_args())
    stopped.assert_outcomes(passed=1, failed=1)  # dense1/kernel passes, dense1/bias fails, then stop
    preset = project.runpytest_inprocess(
        "--decay-audit-setup", "train.py:leaky", "--decay-audit-preset", "decay-all", *_plugin_args()
    )
    preset.assert_outcomes(passed=4)  # decaying everything is what this set-up does


def test_marker_and_fixture(project):
    project.makepyfile(
        test_decay="""
        import pytest

        @pytest.mark.decay_audit(setup="train.py:leaky", preset="no-bias-norm")
        def test_each_weight(decay_audit):
            assert decay_audit.measurement.steps == 3 and decay_audit.report.setup.endswith("train.py:leaky")

        @pytest.mark.decay_audit(setup="train.py:make")
        def test_each_weight_of_the_good_setup(decay_audit):
            assert decay_audit.ok

        def test_helper(decay_audit):
            decay_audit.verify("train.py:leaky", preset="decay-all")
            with pytest.raises(AssertionError, match="dense1/bias: decayed-against-intent"):
                decay_audit.verify("train.py:leaky")
    """
    )
    first = project.runpytest_inprocess("-v", *_plugin_args())
    first.assert_outcomes(passed=2, failed=1)  # the body ran once per variable inside each all-variables test
    first.stdout.fnmatch_lines(["*test_each_weight?all-variables? FAILED*", "2 of 4 variables get the wrong*"])
    result = project.runpytest_inprocess("-v", *_plugin_args())
    result.assert_outcomes(passed=7, failed=2)
    result.stdout.fnmatch_lines(
        ["*test_each_weight?dense2/bias? FAILED*", "*test_each_weight_of_the_good_setup?dense2/bias? PASSED*"]
    )
    project.makepyfile(
        test_decay="""
        import pytest

        @pytest.mark.decay_audit(setup="train.py:make")
        def test_body_fails(decay_audit):
            assert "kernel" in decay_audit.measurement.path
    """
    )
    body = project.runpytest_inprocess("-v", "-k", "bias", *_plugin_args())
    body.assert_outcomes(failed=2, deselected=2)  # the body's own assertion, per variable
    body.stdout.fnmatch_lines(["*assert 'kernel' in 'dense1/bias'*"])


def test_setup_that_raises_fails_only_its_own_tests(project):
    project.makepyfile(
        test_mixed="""
        import pytest

        def test_unrelated():
            pass

        @pytest.mark.decay_audit(setup="train.py:broken")
        def test_each(decay_audit):
            pass
    """
    )
    result = project.runpytest_inprocess("--decay-audit-setup", "train.py:broken", *_plugin_args())
    result.assert_outcomes(passed=1, failed=2)
    output = result.stdout.str()
    assert "Interrupted" not in output and "error" not in output.splitlines()[-1]
    result.stdout.fnmatch_lines(
        [
            "decay-audit: *train.py:broken: make() failed: ZeroDivisionError: division by zero",
            "Traceback (most recent call last), the set-up's frames:",
            "*train.py*, line *, in broken",
            "*train.py*, line *, in helper",
            "ZeroDivisionError: division by zero",
        ]
    )
    assert "decay_audit/stages" not in output  # the probe's own frames are left out
    assert (project.path / "calls.txt").read_text().splitlines() == ["broken"]  # one make() for both tests
    missing = project.runpytest_inprocess("--decay-audit-setup", "missing.py:make", *_plugin_args())
    missing.assert_outcomes(passed=1, failed=2)  # test_mixed.py's two, and the missing file's one
    missing.stdout.fnmatch_lines(["decay-audit: *missing.py: no such file"])
    project.makepyfile(
        test_wrong="""
        import pytest

        @pytest.mark.decay_audit(setup="train.py:make", colour="blue")
        def test_x(decay_audit):
            pass
    """
    )
    wrong = project.runpytest_inprocess("test_wrong.py", *_plugin_args())
    assert wrong.ret != 0 and "unknown option(s) ['colour']" in wrong.stdout.str() + wrong.stderr.str()


def test_stale_cached_names_fail_loudly_and_are_refreshed(project):
    _cache_names(project, "train.py:make", ["dense1/kernel", "dense9/bias"])
    stale = project.runpytest_inprocess("--decay-audit-setup", "train.py:make", *_plugin_args())
    stale.assert_outcomes(failed=2)
    stale.stdout.fnmatch_lines(
        [
            "*train.py:make has variables no test was collected for: dense1/bias, dense2/kernel, dense2/bias",
            "dense9/bias: not a trainable variable of *train.py:make any more",
        ]
    )
    fresh = project.runpytest_inprocess("--decay-audit-setup", "train.py:make", *_plugin_args())
    fresh.assert_outcomes(passed=4)


def test_plugin_is_inert_without_marker_or_option(project):
    project.makepyfile(test_plain="def test_plain():\n    assert 'tensorflow'\n")
    result = project.runpytest_inprocess(*_plugin_args())
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_xdist_workers_collect_the_same_variable_tests(project):
    """Under xdist every worker collects on its own, from the same cache; the node ids must agree."""
    pytest.importorskip("xdist")
    project.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.decay_audit(setup="train.py:leaky")
        def test_each(decay_audit):
            pass
    """
    )
    project.runpytest_inprocess("--decay-audit-setup", "train.py:make", *_plugin_args())  # caches the names
    result = project.runpytest_subprocess("-n", "2", "--decay-audit-setup", "train.py:make", *_plugin_args())
    result.assert_outcomes(passed=6, failed=2)  # make: 4 ok; leaky under kernels-only: both biases wrong
    result.stdout.fnmatch_lines(["*FAILED test_marked.py::test_each?dense?/bias?*"])
