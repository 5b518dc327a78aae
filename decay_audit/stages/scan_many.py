"""``scan`` of many models: ``decay-audit scan PATH...`` over files, directories and globs.

Which paths are models is :mod:`decay_audit.loaders.discover`'s question, and reading them in
parallel bounded readers is :mod:`decay_audit.loaders._pool`'s; this stage only scans each
inventory and keeps one item per model, so one unreadable file never hides the others.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

from decay_audit.errors import DecayAuditError
from decay_audit.kinds import Preset
from decay_audit.loaders._pool import default_jobs, read_many
from decay_audit.loaders.discover import Discovered
from decay_audit.loaders.interface import DEFAULT_LIMITS, Limits
from decay_audit.policy import Policy
from decay_audit.results import BatchItem, BatchReport
from decay_audit.stages.scan import scan_inventory


def scan_many(
    models: Sequence[str | os.PathLike],
    policy: Policy | Preset | str = Preset.KERNELS_ONLY,
    limits: Limits = DEFAULT_LIMITS,
    jobs: int | None = None,
    on_done: Callable[[BatchItem], None] | None = None,
) -> BatchReport:
    """Scan every model in ``models`` (paths as :func:`~decay_audit.loaders.discover.discover`
    returns them), up to ``jobs`` readers at a time. A model that cannot be read becomes an item
    with an ``error``; the others are scanned regardless. ``on_done`` is called once per model, in order."""
    if not isinstance(policy, Policy):
        policy = Policy(Preset(policy))
    items: list[BatchItem] = []
    for path, result in read_many([Path(m) for m in models], limits, max(1, jobs or default_jobs())):
        if isinstance(result, DecayAuditError):
            item = BatchItem(str(path), None, str(result))
        else:
            item = BatchItem(str(path), scan_inventory(result, policy))
        items.append(item)
        if on_done is not None:
            on_done(item)
    return BatchReport(tuple(items))


def missing_items(discovered: Discovered) -> list[BatchItem]:
    """One unreadable item per argument that named nothing, so the report lists it beside the models."""
    return [BatchItem(argument, None, f"{argument}: {problem}") for argument, problem in discovered.missing]
