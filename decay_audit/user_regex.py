"""Regular expressions from users (rule files, ``re:`` selectors) matched under a time budget.

The tools a rule is written for match with Python's ``re`` (Keras' ``var_names``, tf_keras,
Model Garden: ``re.search``), so decay-audit must match with ``re`` too, never with another
engine whose answers could differ. ``re`` backtracks: ``(a+)+$`` against a 40-character
path runs for hours, and a rule file is input like any other. CPython's matcher checks for
signals while it runs, so an interval timer armed around the matching of one command ends
it with one line naming the pattern (:data:`REGEX_SECONDS`; legitimate rules on 10,000
variables take milliseconds).

The timer is armed only in the main thread and only when nobody else's ``SIGALRM`` timer
or handler is in place; otherwise matching runs unbounded, as ``re`` does.
"""

from __future__ import annotations

import contextlib
import re
import signal
import threading
from collections.abc import Iterator

from decay_audit.errors import LimitExceededError

REGEX_SECONDS = 10.0

_current = [""]
"""The pattern being matched, for the error message (one command matches in one thread)."""


def search(pattern: str | re.Pattern[str], text: str) -> bool:
    """``re.search(pattern, text) is not None``, remembering the pattern for :func:`budget`."""
    _current[0] = pattern if isinstance(pattern, str) else pattern.pattern
    return re.search(pattern, text) is not None


class _Expired(Exception):
    pass


def _expire(signum, frame) -> None:
    raise _Expired


@contextlib.contextmanager
def budget(subject: str, paths: int, seconds: float | None = None) -> Iterator[None]:
    """Bound the user-regex matching in the block; an outer budget already armed covers it."""
    seconds = REGEX_SECONDS if seconds is None else seconds
    usable = (
        threading.current_thread() is threading.main_thread()
        and hasattr(signal, "setitimer")
        and signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
    )
    if not usable:
        yield
        return
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        try:
            yield
        finally:  # an expiry right here still reaches the except below
            signal.setitimer(signal.ITIMER_REAL, 0)
    except _Expired:
        raise LimitExceededError(
            subject,
            f"regular expression {_current[0]!r} ran over {seconds:g} s on {paths:,} "
            f"variable names (catastrophic backtracking?)",
        ) from None
    finally:
        signal.signal(signal.SIGALRM, previous)
