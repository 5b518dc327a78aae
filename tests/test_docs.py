"""Every command shown in README.md and docs/ runs, and prints what the page shows (docs/render.py)."""

from __future__ import annotations

import difflib
import re
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "docs"))
import render  # noqa: E402

PAGES = render.pages()
WITH_COMMANDS = [p for p in PAGES if render.parse(p.read_text())]


def test_every_page_with_commands_is_found():
    names = {p.relative_to(REPO).as_posix() for p in PAGES if render.parse(p.read_text())}
    assert {
        "README.md",
        "docs/failure-modes.md",
        "docs/hand-written-decay.md",
        "docs/targets/keras.md",
        "docs/targets/tf-keras.md",
        "docs/targets/model-garden.md",
        "docs/targets/optax.md",
        "docs/targets/native.md",
    } <= names
    targets = {p.stem for p in (REPO / "docs" / "targets").glob("*.md")}
    from decay_audit.rules import TargetName

    assert targets == {t.value for t in TargetName}  # one page per rule target


def test_readme_shell_blocks_are_what_ci_runs():
    """The README's ```bash blocks (its first screen) are run by .ci/run itself; everything else is a console block."""
    ci = (REPO / ".ci" / "run").read_text()
    readme = (REPO / "README.md").read_text()
    for block in re.findall(r"^```bash\n(.*?)^```", readme, re.DOTALL | re.MULTILINE):
        for command in re.split(r"\s*&&\s*|\n", block.strip()):
            if command.startswith((". ", "python3 -m venv")):
                continue
            assert command in ci, f"README command not run by CI or docs tests: {command}"


@pytest.mark.slow
@pytest.mark.parametrize("page", WITH_COMMANDS, ids=[p.relative_to(REPO).as_posix() for p in WITH_COMMANDS])
def test_page_output_is_what_the_commands_print(page, tmp_path):
    before, after = render.render(page, render._environment(tmp_path))
    diff = "".join(difflib.unified_diff(before.splitlines(True), after.splitlines(True), "page", "re-run"))
    assert before == after, f"run `python docs/render.py {page.relative_to(REPO)}`:\n{diff}"
