"""One error base per stage, so the CLI can turn any of them into one line and exit 2.

A :class:`DecayAuditError` always names the input it is about, because the
user reading ``decay-audit: error: ...`` in a CI log has no traceback to go on.
"""

from __future__ import annotations


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
