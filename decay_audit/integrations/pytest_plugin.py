"""pytest plugin: every trainable variable's weight decay as its own test.

Active when decay-audit is installed (entry point ``pytest11``); it does nothing until asked:

- ``pytest --decay-audit-setup train.py:make [--decay-audit-preset no-bias-norm]`` adds the
  tests of that set-up, ``decay-audit[train.py:make]::dense1/bias``;
- ``@pytest.mark.decay_audit(setup="train.py:make", preset="no-bias-norm")`` on a test that takes
  the ``decay_audit`` fixture runs that test once per variable (``test_decay[dense1/bias]``) and
  fails the variables whose measured decay differs from the intent;
- the ``decay_audit`` fixture alone is a helper: ``decay_audit.verify("train.py:make")`` runs
  verify and raises AssertionError naming every wrong variable.

Collection is instant: it never imports TensorFlow or the set-up. The probe runs when the first
test of a set-up runs, once per set-up and options in a session, and a set-up that raises fails
its own tests (the SetupError and the set-up's own frames in the failure), not the session.

Test names need the variable names before anything is probed, so they come from pytest's cache
(``.pytest_cache``): a run that probed a set-up stores its variable names there, keyed by the
set-up file's content, and later runs collect one test per variable, so ``-k bias`` and ``-x``
work as on any test. Without a cached list (a first run, a CI checkout, an edited set-up file,
``-p no:cacheprovider``) a set-up is ONE test, ``...::all-variables``, whose failure lists every
wrong variable. This keeps per-variable names wherever they can be had without the 20-second
probe at collection; naming tests from a cheaper source is not possible, since only ``make()``
knows the variables. If the set-up changed in a way the file's content does not show (a module
it imports), the first of its tests to run fails saying which names were stale, and the cache
is refreshed for the next run. A marker's relative ``setup`` path is taken from the test file's
directory, the command line's from the current directory.
"""

from __future__ import annotations

import hashlib
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest

_VERIFY_OPTIONS = frozenset({"preset", "steps", "rules", "expect_decay", "expect_no_decay", "device"})
ALL_VARIABLES = "all-variables"
"""The name of a set-up's one test when its variable names are not cached."""
_CACHE_DIR = "decay_audit/variables"
_PACKAGE = Path(__file__).resolve().parents[1]


@dataclass
class _Session:
    """What the plugin keeps for one session."""

    results: dict[AuditSpec, Any] = field(default_factory=dict)
    """spec -> its VerifyReport, or (exception, traceback) when verify raised."""
    collected: dict[AuditSpec, set[str] | None] = field(default_factory=dict)
    """spec -> the variable names its tests were collected with (None: one all-variables test)."""
    unchecked: dict[AuditSpec, tuple[str, ...]] = field(default_factory=dict)
    """spec -> variables the probe found that no collected test names; told once, by the first test run."""


_STATE = pytest.StashKey[_Session]()


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


def _state(config: pytest.Config) -> _Session:
    return config.stash.setdefault(_STATE, _Session())


# --- variable names from pytest's cache ------------------------------------------------------


def _cache_key(spec: AuditSpec) -> str:
    return f"{_CACHE_DIR}/{hashlib.sha256(spec.setup.encode()).hexdigest()[:16]}"


def _fingerprint(spec: AuditSpec) -> str | None:
    """The set-up file's content hash: an edited file may have other variables."""
    try:
        return hashlib.sha256(spec.path.read_bytes()).hexdigest()
    except OSError:
        return None


def cached_variables(config: pytest.Config, spec: AuditSpec) -> list[str] | None:
    """The variable names a previous run probed for this set-up file as it is now, else None."""
    cache = getattr(config, "cache", None)
    if cache is None:
        return None
    entry = cache.get(_cache_key(spec), None)
    if not isinstance(entry, dict) or entry.get("setup") != spec.setup:
        return None
    fingerprint, names = _fingerprint(spec), entry.get("variables")
    if fingerprint is None or entry.get("fingerprint") != fingerprint or not isinstance(names, list) or not names:
        return None
    return [str(n) for n in names]


def _remember(config: pytest.Config, spec: AuditSpec, names: list[str]) -> None:
    cache = getattr(config, "cache", None)
    fingerprint = _fingerprint(spec)
    if cache is not None and fingerprint is not None:
        cache.set(_cache_key(spec), {"setup": spec.setup, "fingerprint": fingerprint, "variables": names})


def _collected(config: pytest.Config, spec: AuditSpec, names: Iterable[str] | None) -> None:
    collected = _state(config).collected
    if names is None:
        collected.setdefault(spec, None)
    else:
        collected[spec] = (collected.get(spec) or set()) | set(names)


# --- the probe, once per set-up, at the first test that needs it --------------------------------


def _report(config: pytest.Config, spec: AuditSpec) -> Any:
    """The verify report of ``spec``, computed once per session; a failure is raised again, with
    its first traceback, by every test of the set-up (the probe is not retried per test)."""
    state = _state(config)
    if spec not in state.results:
        from decay_audit.quiet_tensorflow import import_tensorflow

        try:
            import_tensorflow()  # TensorFlow's start-up chatter is not a test result
            from decay_audit.stages.verify import verify

            report = verify(spec.setup, **dict(spec.options))
        except Exception as exc:  # noqa: BLE001 - every test of this set-up fails with it, once probed
            state.results[spec] = (exc, exc.__traceback__)
        else:
            state.results[spec] = report
            names = [m.path for m in report.measurements]
            _remember(config, spec, names)
            collected = state.collected.get(spec)
            if collected is not None:
                state.unchecked[spec] = tuple(n for n in names if n not in collected)
    result = state.results[spec]
    if isinstance(result, tuple):
        error, tb = result
        from decay_audit.errors import DecayAuditError

        if isinstance(error, DecayAuditError):
            pytest.fail(setup_failure(error), pytrace=False)
        raise error.with_traceback(tb)
    return result


def setup_failure(exc: BaseException) -> str:
    """The SetupError's line, then the traceback of its cause in the set-up's own frames (decay-audit's
    frames dropped): where in the user's code it went wrong, without the probe's machinery."""
    lines = [f"decay-audit: {exc}"]
    cause = exc.__cause__
    if cause is not None:
        frames = [f for f in traceback.extract_tb(cause.__traceback__) if not _is_ours(f.filename)]
        lines += ["", "Traceback (most recent call last), the set-up's frames:"]
        lines += [line.rstrip("\n") for line in traceback.format_list(frames)]
        lines += [line.rstrip("\n") for line in traceback.format_exception_only(type(cause), cause)]
    return "\n".join(lines)


def _is_ours(filename: str) -> bool:
    try:
        return Path(filename).resolve().is_relative_to(_PACKAGE)
    except (OSError, ValueError):
        return False


def explain(measurement: Any, report: Any) -> str:
    """One failure message: the weight, what was measured, what was intended, and the likely fix."""
    text = (
        f"{measurement.path}: {measurement.outcome.value}: {measurement.detail} [intent: {measurement.intent}] "
        f"({report.optimizer}, weight_decay={report.weight_decay}, {report.steps} steps)"
    )
    hint = getattr(measurement, "hint", None)
    return f"{text}\n  hint: {hint}" if hint else text


def _all_variables(report: Any) -> str | None:
    """The failure of an all-variables test: every wrong variable, one line each; None when all are right."""
    if not report.mismatches:
        return None
    lines = [f"{len(report.mismatches)} of {len(report.measurements)} variables get the wrong weight decay:"]
    lines += ["  " + explain(m, report).replace("\n", "\n  ") for m in report.mismatches]
    return "\n".join(lines)


def _measurement(config: pytest.Config, spec: AuditSpec, variable: str) -> tuple[Any, Any]:
    """This test's variable's measurement; a stale cached name, or variables no test was collected
    for, fail the test that finds them (a gate must not pass weights it never looked at)."""
    report = _report(config, spec)
    found = {m.path: m for m in report.measurements}
    unchecked = _state(config).unchecked.pop(spec, ())
    problems = []
    if variable not in found:
        problems.append(f"{variable}: not a trainable variable of {spec.setup} any more")
    if unchecked:
        problems.append(f"{spec.setup} has variables no test was collected for: {', '.join(unchecked)}")
    if problems:
        if variable in found and not found[variable].ok:
            problems.insert(0, explain(found[variable], report))
        problems.append("(test names came from the last run's cache, refreshed now: the next run collects them afresh)")
        pytest.fail("\n".join(problems), pytrace=False)
    return found[variable], report


@dataclass
class DecayAudit:
    """The ``decay_audit`` fixture's value."""

    config: pytest.Config
    measurement: Any = None
    """Under the marker: this test's variable's :class:`~decay_audit.results.Measurement` (set when
    the test's body runs, the probe having run then)."""
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
        failure = _all_variables(report)
        if failure:
            raise AssertionError(failure)
        return report


# --- options, marker, fixture -------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("decay-audit", "weight decay per variable (decay-audit)")
    group.addoption(
        "--decay-audit-setup",
        action="append",
        default=[],
        metavar="FILE.py:FUNCTION",
        help="Add the tests of this training set-up: one per trainable variable once a run has "
        "cached their names, else one for all (repeatable).",
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
    return DecayAudit(request.config, base=Path(request.node.path).parent)


def _marker_spec(metafunc: pytest.Metafunc, marker: pytest.Mark) -> AuditSpec:
    kwargs = dict(marker.kwargs)
    setup = kwargs.pop("setup", marker.args[0] if marker.args else None)
    if setup is None:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: @pytest.mark.decay_audit needs setup=")
    return AuditSpec.make(setup, Path(metafunc.definition.path).parent, **kwargs)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker("decay_audit")
    if marker is None:
        return
    if "decay_audit" not in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: a @pytest.mark.decay_audit test must take the decay_audit fixture"
        )
    spec = _marker_spec(metafunc, marker)
    names = cached_variables(metafunc.config, spec)
    _collected(metafunc.config, spec, names)
    metafunc.fixturenames.append("decay_audit_variable")
    if names is None:
        metafunc.parametrize("decay_audit_variable", [(spec, None)], ids=[ALL_VARIABLES])
    else:
        metafunc.parametrize("decay_audit_variable", [(spec, n) for n in names], ids=names)


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    """A marked test: probe (once per set-up), then run its body with its variable's verdict in the
    fixture, then fail it when that variable's decay is wrong. An all-variables test runs its body
    once per variable and fails listing every wrong one."""
    callspec = getattr(pyfuncitem, "callspec", None)
    if callspec is None or "decay_audit_variable" not in callspec.params:
        return None
    spec, variable = callspec.params["decay_audit_variable"]
    audit = cast(DecayAudit, pyfuncitem.funcargs["decay_audit"])
    argnames = pyfuncitem._fixtureinfo.argnames
    arguments = {name: pyfuncitem.funcargs[name] for name in argnames}
    if variable is not None:
        audit.measurement, audit.report = _measurement(pyfuncitem.config, spec, variable)
        pyfuncitem.obj(**arguments)
        if not audit.measurement.ok:
            pytest.fail(explain(audit.measurement, audit.report), pytrace=False)
        return True
    report = _report(pyfuncitem.config, spec)
    audit.report = report
    for measurement in report.measurements:
        audit.measurement = measurement
        try:
            pyfuncitem.obj(**arguments)
        except BaseException as exc:
            if hasattr(exc, "add_note"):
                exc.add_note(f"decay-audit: the body failed for variable {measurement.path}")
            raise
    audit.measurement = None
    failure = _all_variables(report)
    if failure:
        pytest.fail(failure, pytrace=False)
    return True


# --- --decay-audit-setup: items without a test file ------------------------------------------


class VariableItem(pytest.Item):
    """One trainable variable of one set-up, or all of them (``variable`` None) while no run has
    cached their names."""

    def __init__(self, *, spec: AuditSpec, variable: str | None, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec, self.variable = spec, variable

    def runtest(self) -> None:
        if self.variable is None:
            report = _report(self.config, self.spec)
            self.user_properties.extend((m.path, m.outcome.value) for m in report.measurements)
            failure = _all_variables(report)
            if failure:
                pytest.fail(failure, pytrace=False)
            return
        measurement, report = _measurement(self.config, self.spec, self.variable)
        if not measurement.ok:
            pytest.fail(explain(measurement, report), pytrace=False)

    def reportinfo(self) -> tuple[Path, int, str]:
        from decay_audit.report.sarif import function_line

        return self.spec.path, function_line(self.spec.path, self.spec.function) - 1, f"decay-audit {self.name}"


class SetupCollector(pytest.Collector):
    """The tests of one ``--decay-audit-setup``: named from the cache, never probed here."""

    def __init__(self, *, spec: AuditSpec, **kwargs: Any):
        super().__init__(**kwargs)
        self.spec = spec

    def collect(self) -> list[pytest.Item]:
        names = cached_variables(self.config, self.spec)
        _collected(self.config, self.spec, names)
        if names is None:
            return [VariableItem.from_parent(self, name=ALL_VARIABLES, spec=self.spec, variable=None)]
        return [VariableItem.from_parent(self, name=n, spec=self.spec, variable=n) for n in names]


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
        session.ihook.pytest_collectreport(report=report)  # counted and shown like any collected module
        if report.failed:
            continue
        items.extend(item for item in report.result if isinstance(item, pytest.Item))


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say why a set-up was one test: the next run can name its variables."""
    state = config.stash.get(_STATE, None)
    if state is None:
        return
    whole = sorted(spec.setup for spec, names in state.collected.items() if names is None)
    if whole:
        terminalreporter.write_line(
            f"decay-audit: {len(whole)} set-up(s) collected as one {ALL_VARIABLES} test (no cached variable names yet"
            + ("" if getattr(config, "cache", None) is not None else "; the cacheprovider plugin is off")
            + "); runs after one that probed them collect one test per variable, so -k can pick weights"
        )
