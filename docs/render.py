"""Run every command shown in README.md and docs/, and keep the shown output true.

    python docs/render.py          # re-run every ```console block and rewrite its output in place
    python docs/render.py --check  # exit 1 and show the difference where a page no longer matches

A ```console block holds ``$ command`` lines, each followed by what it prints (stdout and
stderr, as a terminal shows them) and, when it is not 0, a last line ``[exit N]``. Commands run
with bash from the repository root, ``decay-audit``, ``python`` and ``pytest`` being this checkout's. tests/test_docs.py runs
the ``--check`` comparison, so the docs cannot rot.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```console\n(.*?)^```\n", re.DOTALL | re.MULTILINE)
VOLATILE = (
    (re.compile(r" in \d+\.\d+s( \(\d+:\d+:\d+\))?"), " in N.NNs"),
    (re.compile(r"\S*/site-packages/"), "<site-packages>/"),
)
"""Run times in pytest's summary line change every run; where the packages are installed differs per machine."""


def pages() -> list[Path]:
    return [REPO / "README.md"] + sorted((REPO / "docs").rglob("*.md"))


@dataclass(frozen=True)
class Shown:
    page: Path
    command: str
    output: str
    """What the page shows after the command (including an ``[exit N]`` line)."""


def parse(text: str) -> list[list[tuple[str, str]]]:
    """Per console block: (command, shown output) pairs."""
    blocks = []
    for match in BLOCK.finditer(text):
        pairs: list[tuple[str, list[str]]] = []
        for line in match.group(1).splitlines():
            if line.startswith("$ "):
                pairs.append((line[2:], []))
            elif pairs:
                pairs[-1][1].append(line)
        blocks.append([(command, "\n".join(lines)) for command, lines in pairs])
    return blocks


def _environment(bin_dir: Path) -> dict[str, str]:
    shim = bin_dir / "decay-audit"
    shim.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m decay_audit.cli "$@"\n')
    shim.chmod(0o755)
    python = bin_dir / "python"  # a script, not a symlink: a symlinked venv python loses its venv
    python.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    python.chmod(0o755)
    # pytest with the plugin as installed: by its entry point, or by name in a checkout not installed
    (bin_dir / "pytest").write_text(
        f"#!{sys.executable}\nimport sys\nfrom importlib.metadata import entry_points\nimport pytest\n"
        "installed = any(e.value == 'decay_audit.integrations.pytest_plugin' for e in entry_points(group='pytest11'))\n"
        "sys.exit(pytest.main(sys.argv[1:] + ([] if installed else ['-p', 'decay_audit.integrations.pytest_plugin'])))\n"
    )
    (bin_dir / "pytest").chmod(0o755)
    pythonpath = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": pythonpath,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "CUDA_VISIBLE_DEVICES": "",
        "COLUMNS": "120",
        "NO_COLOR": "1",
    }


def run(command: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    text = "\n".join(line.rstrip() for line in result.stdout.rstrip("\n").splitlines())
    for pattern, replacement in VOLATILE:
        text = pattern.sub(replacement, text)
    if result.returncode:
        text = (text + "\n" if text else "") + f"[exit {result.returncode}]"
    return text


def render(page: Path, env: dict[str, str]) -> tuple[str, str]:
    """(the page as it is, the page with every output re-run)."""
    text = page.read_text()

    def block(match: re.Match) -> str:
        lines = []
        for command, _ in parse(match.group(0))[0]:
            lines.append(f"$ {command}")
            output = run(command, env)
            if output:
                lines.append(output)
        return "```console\n" + "\n".join(lines) + "\n```\n"

    return text, BLOCK.sub(block, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 on a difference")
    parser.add_argument("pages", nargs="*", type=Path, help="pages to render (default: README.md and docs/)")
    options = parser.parse_args()
    failed = False
    with tempfile.TemporaryDirectory() as temp:
        env = _environment(Path(temp))
        for page in options.pages or pages():
            before, after = render(page.resolve(), env)
            if before == after:
                continue
            if options.check:
                failed = True
                sys.stdout.writelines(
                    difflib.unified_diff(before.splitlines(True), after.splitlines(True), str(page), f"{page} (re-run)")
                )
            else:
                page.write_text(after)
                print(f"updated {page}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
