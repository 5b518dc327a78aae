"""pytest plugin: every trainable variable's weight decay as its own test.

Active when decay-audit is installed (entry point ``pytest11``); it does nothing until asked:

- ``pytest --decay-audit-setup train.py:make [--decay-audit-preset no-bias-norm]`` adds one test
  per variable of the set-up, ``decay-audit[train.py:make]::dense1/bias``;
- ``@pytest.mark.decay_audit(setup="train.py:make", preset="no-bias-norm")`` on a test that takes
  the ``decay_audit`` fixture runs that test once per variable (``test_decay[dense1/bias]``) and
  fails the variables whose measured decay differs from the intent;
- the ``decay_audit`` fixture alone is a helper: ``decay_audit.verify("train.py:make")`` runs
  verify and raises AssertionError naming every wrong variable.

A failure names the weight, the verdict and the intent, so ``-k bias`` and ``-x`` work as on any
test. The probe runs once per distinct set-up and options in a session (at collection: the
variables must be known to name the tests), and each test reads its variable's verdict. A
marker's relative ``setup`` path is taken from the test file's directory, the command line's
from the current directory. TensorFlow is imported only when a set-up is verified.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

_VERIFY_OPTIONS = frozenset({"preset", "steps", "rules", "expect_decay", "expect_no_decay", "device"})
_CACHE_KEY = pytest.StashKey[dict]()


@dataclass(frozen=True)
class AuditSpec:
    """One set-up with its verify options: what one probe run measures."""

    setup: str
    """``FILE.py:FUNCTION`` with FILE absolute."""
    options: tuple[tuple[str, Any], ...] = ()
    """Keyword options for :func:`decay_audit.verify`, sorted (hashable, so runs are shared)."""

    @classmethod
    def make(cls, setup: str, base: Path, **options: Any) -> AuditSpec:
        unknown = set(options) - _VERIFY_OPTIONS
        if unknown:
            raise pytest.UsageError(
                f"decay_audit: unknown option(s) {sorted(unknown)}; "
                f"expected setup= and any of {sorted(_VERIFY_OPTIONS)}"
            )
        path, sep, function = str(setup).rpartition(":")
        if not sep or not path.endswith(".py") or not function:
            raise pytest.UsageError(f"decay_audit: setup must be FILE.py:FUNCTION, got {setup!r}")
        absolute = (base / path).resolve() if not Path(path).is_absolute() else Path(path)
        frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))
        return cls(f"{absolute}:{function}", frozen)

    @property
    def path(self) -> Path:
        return Path(self.setup.rpartition(":")[0])

    @property
    def function(self) -> str:
        return self.setup.rpartition(":")[2]


def _report(config: pytest.Config, spec: AuditSpec) -> Any:
    """The verify report of ``spec``, computed once per session."""
    cache = config.stash.setdefault(_CACHE_KEY, {})
    if spec not in cache:
        from decay_audit.errors import DecayAuditError
        from decay_audit.quiet_tensorflow import import_tensorflow

        import_tensorflow()  # TensorFlow's start-up chatter is not a test result
        from decay_audit.stages.verify import verify

        try:
            cache[spec] = verify(spec.setup, **dict(spec.options))
        except DecayAuditError as exc:
            cache[spec] = exc
    result = cache[spec]
    if isinstance(result, Exception):
        raise result
    return result


def explain(measurement: Any, report: Any) -> str:
    """One failure message: the weight, what was measured, and what was intended."""
    return (
        f"{measurement.path}: {measurement.outcome.value}: {measurement.detail} [intent: {measurement.intent}] "
        f"({report.optimizer}, weight_decay={report.weight_decay}, {report.steps} steps)"
    )


@dataclass
class DecayAudit:
    """The ``decay_audit`` fixture's value."""

    config: pytest.Config
    measurement: Any = None
    """Under the marker: this test's variable's :class:`~decay_audit.results.Measurement`."""
    report: Any = None
    """Under the marker: the whole :class:`~decay_audit.results.VerifyReport`."""
    base: Path = field(default_factory=Path.cwd)

    @property
    def ok(self) -> bool:
        return self.measurement is None or self.measurement.ok

    def verify(self, setup: str, **options: Any) -> Any:
        """Verify ``setup`` (``FILE.py:FUNCTION``, relative to the test file) and raise AssertionError
        naming every variable whose decay differs from the intent; returns the report."""
        report = _report(self.config, AuditSpec.make(setup, self.base, **options))
        if report.mismatches:
            lines = [f"{len(report.mismatches)} of {len(report.measurements)} variables get the wrong weight decay:"]
            lines += [f"  {explain(m, report)}" for m in report.mismatches]
            raise AssertionError("\n".join(lines))
        return report


# --- options, marker, fixture -------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("decay-audit", "weight decay per variable (decay-audit)")
    group.addoption(
        "--decay-audit-setup",
        action="append",
        default=[],
        metavar="FILE.py:FUNCTION",
        help="Add one test per trainable variable of this training set-up (repeatable).",
    )
    group.addoption(
        "--decay-audit-preset",
        default=None,
        metavar="PRESET",
        help="Policy preset for --decay-audit-setup (kernels-only, no-bias-norm, ndim, decay-all).",
    )
    group.addoption("--decay-audit-steps", type=int, default=None, metavar="N", help="Probe steps (default 3).")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "decay_audit(setup='train.py:make', preset=..., steps=..., rules=..., expect_decay=..., "
        "expect_no_decay=...): run the test once per trainable variable of the set-up, failing "
        "where its measured weight decay differs from the intent (fixture: decay_audit)",
    )


@pytest.fixture
def decay_audit(request: pytest.FixtureRequest) -> DecayAudit:
    """Under ``@pytest.mark.decay_audit``: this variable's verdict; otherwise a ``verify`` helper."""
    base = Path(request.node.path).parent
    marker = request.node.get_closest_marker("decay_audit")
    if marker is None or not hasattr(request.node, "callspec"):
        return DecayAudit(request.config, base=base)
    spec, path = request.node.callspec.params["decay_audit_variable"]
    report = _report(request.config, spec)
    measurement = next(m for m in report.measurements if m.path == path)
    return DecayAudit(request.config, measurement, report, base)


def _marker_spec(metafunc_or_item: Any, marker: pytest.Mark) -> AuditSpec:
    kwargs = dict(marker.kwargs)
    setup = kwargs.pop("setup", marker.args[0] if marker.args else None)
    if setup is None:
        raise pytest.UsageError(f"{metafunc_or_item.definition.nodeid}: @pytest.mark.decay_audit needs setup=")
    return AuditSpec.make(setup, Path(metafunc_or_item.definition.path).parent, **kwargs)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("decay_audit")
    if marker is None:
        return
    if "decay_audit" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: a @pytest.mark.decay_audit test must take the decay_audit fixture"
        )
    spec = _marker_spec(metafunc, marker)
    report = _report(metafunc.config, spec)
    metafunc.fixturenames.append("decay_audit_variable")
    metafunc.parametrize(
        "decay_audit_variable", [(spec, m.path) for m in report.measurements], ids=[m.path for m in report.measurements]
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After a marked test's own body passed, fail it when its variable's decay is wrong."""
    result = yield
    if item.get_closest_marker("decay_audit") is not None and hasattr(item, "callspec"):
        spec, path = item.callspec.params.get("decay_audit_variable", (None, None))
        if spec is not None:
            report = _report(item.config, spec)
            measurement = next(m for m in report.measurements if m.path == path)
            if not measurement.ok:
                pytest.fail(explain(measurement, report), pytrace=False)
    return result


# --- --decay-audit-setup: items without a test file ------------------------------------------


class VariableItem(pytest.Item):
    """One trainable variable of one set-up."""

    def __init__(self, *, spec: AuditSpec, variable: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec, self.variable = spec, variable

    def runtest(self) -> None:
        report = _report(self.config, self.spec)
        measurement = next(m for m in report.measurements if m.path == self.variable)
        if not measurement.ok:
            pytest.fail(explain(measurement, report), pytrace=False)

    def reportinfo(self) -> tuple[Path, int, str]:
        from decay_audit.report.sarif import function_line

        return self.spec.path, function_line(self.spec.path, self.spec.function) - 1, f"decay-audit {self.variable}"


class SetupCollector(pytest.Collector):
    """The tests of one ``--decay-audit-setup``."""

    def __init__(self, *, spec: AuditSpec, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec = spec

    def collect(self) -> list[pytest.Item]:
        report = _report(self.config, self.spec)
        return [
            VariableItem.from_parent(self, name=m.path, spec=self.spec, variable=m.path) for m in report.measurements
        ]

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from decay_audit.errors import DecayAuditError

        if isinstance(excinfo.value, DecayAuditError):
            return f"decay-audit: {excinfo.value}"
        return super().repr_failure(excinfo)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Runs before -k/-m deselection (tryfirst), so those select among these tests too."""
    setups = config.getoption("decay_audit_setup")
    if not setups:
        return
    options: dict[str, Any] = {}
    if config.getoption("decay_audit_preset"):
        options["preset"] = config.getoption("decay_audit_preset")
    if config.getoption("decay_audit_steps"):
        options["steps"] = config.getoption("decay_audit_steps")
    for setup in setups:
        spec = AuditSpec.make(setup, Path(config.invocation_params.dir), **options)
        name = f"decay-audit[{setup}]"
        collector = SetupCollector.from_parent(session, name=name, nodeid=name, spec=spec)
        report = session.ihook.pytest_make_collect_report(collector=collector)
        if report.failed:
            session.ihook.pytest_collectreport(report=report)
            continue
        items.extend(report.result)
