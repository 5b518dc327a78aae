"""The package's import rules, as docs/architecture.md states them: no import circle anywhere,
and each part imports only the parts its row allows (so no output format imports a stage)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "decay_audit"
DOC = ROOT / "docs" / "architecture.md"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The package module an import names (the nearest existing one), or None outside the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path) -> set[str]:
    """Every decay_audit module ``path`` imports: top-level, inside functions and under TYPE_CHECKING."""
    edges = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "decay_audit":
                target = _resolve(name)
                if target and target != "decay_audit" or name == "decay_audit":
                    edges.add(target)
    return edges


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _table(heading: str) -> list[list[str]]:
    text = DOC.read_text(encoding="utf-8").split(heading, 1)[1]
    rows = []
    for line in text.splitlines():
        if line.startswith("|"):
            rows.append([cell.strip() for cell in line.strip("|").split("|")])
        elif rows:
            break
    return rows[2:]  # header and rule


def _parts() -> dict[str, str]:
    """Module prefix → part, from the doc's table of parts."""
    owners = {}
    for part, modules, _ in _table("## The parts"):
        for module in re.findall(r"`([^`]+)`", modules):
            owners["decay_audit" if module == "__init__" else f"decay_audit.{module}"] = part
    return owners


def _part_of(module: str, owners: dict[str, str]) -> str:
    candidate = module
    while candidate:
        if candidate in owners:
            return owners[candidate]
        candidate = candidate.rpartition(".")[0]
    raise AssertionError(f"{module} belongs to no part in docs/architecture.md: add it to 'The parts'")


def test_every_module_belongs_to_a_part():
    owners = _parts()
    for module in MODULES:
        _part_of(module, owners)


def test_each_part_imports_only_what_docs_architecture_allows():
    owners = _parts()
    allowed = {
        part: {p.strip() for p in may.split(",") if p.strip()} | {part}
        for part, may in _table("## Which part may import which")
    }
    assert set(allowed) == set(owners.values()), "every part needs a row in 'Which part may import which'"
    wrong = sorted(
        f"{module} ({_part_of(module, owners)}) imports {target} ({_part_of(target, owners)})"
        for module, targets in GRAPH.items()
        for target in targets
        if _part_of(target, owners) not in allowed[_part_of(module, owners)]
    )
    assert not wrong, "imports docs/architecture.md does not allow:\n" + "\n".join(wrong)


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each one import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return circles


def test_no_import_circle_anywhere_in_the_package():
    circles = _circles(GRAPH)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _circles({"a": {"b"}, "b": set()}) == []


def test_no_report_module_imports_a_stage_or_the_probe():
    for module, targets in GRAPH.items():
        if module.startswith("decay_audit.report"):
            assert not {t for t in targets if t.startswith(("decay_audit.stages", "decay_audit.probe"))}, module


def test_every_public_name_is_exported_and_loads():
    import decay_audit

    assert sorted(decay_audit.__all__) == sorted(decay_audit._EXPORTS)
    for name in decay_audit.__all__:
        assert getattr(decay_audit, name) is not None
