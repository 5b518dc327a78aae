"""A short soak: repeated parallel scans of real and hostile files leak nothing in the caller.

The long version is ``python tests/fuzz/soak.py --scans 1000 --workers 4`` (figures in the README).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow
def test_short_soak_keeps_outcomes_memory_and_descriptors_flat():
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "fuzz" / "soak.py"), "--scans", "80", "--workers", "3", "--warmup", "40"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["changed_outcomes"] == [], summary["changed_outcomes"]
    assert summary["outcomes"]["ok"] > 0 and summary["outcomes"]["error"] > 0, summary
    assert summary["fds_end"] <= summary["fds_after_warmup"], summary
    assert summary["children_left"] == 0, summary
    assert summary["rss_growth_mib"] <= 8, summary
    assert result.returncode == 0, result.stderr[-2000:]
