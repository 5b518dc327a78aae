"""One error base per stage, so the CLI can turn any of them into one line and exit 2.

A :class:`DecayAuditError` always names the input it is about, because the
user reading ``decay-audit: error: ...`` in a CI log has no traceback to go on.
"""

from __future__ import annotations

from decay_audit.kinds import TextEnum


class DecayAuditError(Exception):
    """Bad input or usage: reported as one line on stderr, exit code 2."""

    def __init__(self, subject: str, problem: str):
        self.subject = subject
        self.problem = problem
        super().__init__(f"{subject}: {problem}" if subject else problem)


class ModelLoadError(DecayAuditError):
    """A model path that is missing, unreadable, corrupt or not a model."""


class LimitExceededError(ModelLoadError):
    """A declared size or count in the input is over a configured limit."""


class UsageError(DecayAuditError):
    """Options that contradict each other or name something unknown."""


class OptionError(UsageError):
    """A parameter's value is wrong or cannot be served.

    ``parameter`` is the name the Python API spells (``keras_backend``); the library never
    names a command-line flag, and the CLI shows the same error as ``--keras-backend: ...``.
    """

    def __init__(self, parameter: str, problem: str):
        self.parameter = parameter
        super().__init__(parameter, problem)

    @property
    def flag(self) -> str:
        """The command-line spelling of :attr:`parameter`."""
        return "--" + self.parameter.replace("_", "-")


class Stage(TextEnum):
    """Where a set-up stopped being probe-able, in the order verify reaches them."""

    IMPORT = "import"
    """Importing the ``--setup`` file."""
    MAKE = "make()"
    """Calling the factory, or what it returned is not a set-up."""
    BATCH = "batch"
    """Building a batch: the set-up's own ``batch``/``dataset``, or synthetic inputs and targets."""
    STEP = "step"
    """One training step of the set-up (forward, loss, gradients, the hand-written ``train_step``)."""
    MEASUREMENT = "measurement"
    """The twin-step probe itself (snapshots, twins, comparing)."""


class SetupError(DecayAuditError):
    """A training set-up that cannot be loaded or probed; ``stage`` says where it stopped."""

    def __init__(self, subject: str, problem: str, stage: Stage = Stage.MAKE):
        self.stage = Stage(stage)
        super().__init__(subject, f"{self.stage.value} failed: {problem}")
        self.problem = problem


class NoBackendError(DecayAuditError):
    """No probe backend accepts the set-up, or the one named does not exist (exit 2, one line).
    Its subject is the set-up, or ``backend`` (the parameter) when the name given is unknown."""
