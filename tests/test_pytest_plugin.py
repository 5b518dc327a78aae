"""The pytest plugin, run by pytest's own ``pytester``: one test per variable, -k, -x, marker, fixture.

The runs are in-process (TensorFlow is already imported here, so each run costs only its probe).
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import tomllib
from conftest import REPO, SAMPLES

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
"""


def _plugin_args() -> list[str]:
    """Load the plugin by name unless the installed package's entry point already does."""
    installed = any(ep.value == "decay_audit.integrations.pytest_plugin" for ep in entry_points(group="pytest11"))
    return ["-p", "no:cacheprovider"] + ([] if installed else ["-p", "decay_audit.integrations.pytest_plugin"])


@pytest.fixture
def project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(train=SETUP)
    return pytester


def test_entry_point_is_declared_and_importable():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["pytest11"]["decay_audit"]
    module = import_module(target)
    assert callable(module.pytest_addoption) and callable(module.pytest_collection_modifyitems)


def test_command_line_setup_gives_one_test_per_variable(project):
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
    good = project.runpytest_inprocess("--decay-audit-setup", "train.py:make", *_plugin_args())
    good.assert_outcomes(passed=4)


def test_k_selects_weights_and_x_stops_at_the_first_wrong_one(project):
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
            assert decay_audit.measurement.path in decay_audit.report.setup or decay_audit.measurement.steps == 3

        @pytest.mark.decay_audit(setup="train.py:make")
        def test_each_weight_of_the_good_setup(decay_audit):
            assert decay_audit.ok

        def test_helper(decay_audit):
            decay_audit.verify("train.py:leaky", preset="decay-all")
            with pytest.raises(AssertionError, match="dense1/bias: decayed-against-intent"):
                decay_audit.verify("train.py:leaky")
    """
    )
    result = project.runpytest_inprocess("-v", *_plugin_args())
    result.assert_outcomes(passed=7, failed=2)
    result.stdout.fnmatch_lines(
        ["*test_each_weight?dense2/bias? FAILED*", "*test_each_weight_of_the_good_setup?dense2/bias? PASSED*"]
    )


def test_bad_setup_is_one_collection_error(project):
    result = project.runpytest_inprocess("--decay-audit-setup", "missing.py:make", *_plugin_args())
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["decay-audit: *missing.py: no such file"])
    project.makepyfile(
        test_wrong="""
        import pytest

        @pytest.mark.decay_audit(setup="train.py:make", colour="blue")
        def test_x(decay_audit):
            pass
    """
    )
    wrong = project.runpytest_inprocess(*_plugin_args())
    assert wrong.ret != 0 and "unknown option(s) ['colour']" in wrong.stdout.str() + wrong.stderr.str()


def test_plugin_is_inert_without_marker_or_option(project):
    project.makepyfile(test_plain="def test_plain():\n    assert 'tensorflow'\n")
    result = project.runpytest_inprocess(*_plugin_args())
    result.assert_outcomes(passed=1)


@pytest.mark.slow
def test_xdist_workers_collect_the_same_variable_tests(project):
    """Under xdist every worker collects (and so probes) on its own; the node ids must agree."""
    pytest.importorskip("xdist")
    project.makepyfile(
        test_marked="""
        import pytest

        @pytest.mark.decay_audit(setup="train.py:leaky")
        def test_each(decay_audit):
            pass
    """
    )
    result = project.runpytest_subprocess("-n", "2", "--decay-audit-setup", "train.py:make", *_plugin_args())
    result.assert_outcomes(passed=6, failed=2)  # make: 4 ok; leaky under kernels-only: both biases wrong
    result.stdout.fnmatch_lines(["*FAILED test_marked.py::test_each?dense?/bias?*"])
