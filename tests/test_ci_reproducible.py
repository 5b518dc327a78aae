"""CI must fail only on a change: property-based tests draw the same examples on every CI run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _profile(env_changes: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HYPOTHESIS_PROFILE")} | env_changes
    code = "import conftest; from hypothesis import settings; d = settings.default; print(d.derandomize, d.database)"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=TESTS, env=env, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_ci_profile_is_derandomized_and_keeps_no_database():
    assert _profile({"CI": "true"}) == "True None"


def test_a_developer_machine_explores_at_random():
    assert _profile({}).startswith("False ")
