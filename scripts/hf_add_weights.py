"""List every ``add_weight`` call in the installed ``transformers``' TF models (reads source, imports nothing).

Prints ``module<TAB>class<TAB>name_scope<TAB>name`` per call. ``decay_audit/knowledge/transformers.py`` must have
an entry for each literal name; ``tests/test_hf.py`` runs :func:`add_weight_calls` to check that
against the installed version. Usage: ``python scripts/hf_add_weights.py [transformers_dir]``.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path


def transformers_dir() -> Path:
    spec = importlib.util.find_spec("transformers")
    if spec is None or spec.origin is None:
        raise SystemExit("transformers is not installed")
    return Path(spec.origin).parent


def add_weight_calls(root: Path) -> list[tuple[str, str, str, str]]:
    """(module, class, enclosing ``tf.name_scope`` literal or '', literal name or the expression)."""
    files = sorted(root.glob("models/*/modeling_tf_*.py")) + [root / "modeling_tf_utils.py"]
    rows: list[tuple[str, str, str, str]] = []
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = path.stem.removeprefix("modeling_tf_")
        for cls in (node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)):
            _visit(cls, (), module, cls.name, rows)
    return rows


def _visit(node: ast.AST, scopes: tuple[str, ...], module: str, cls: str, rows: list) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef):
            continue
        inner = scopes
        if isinstance(child, ast.With):
            for item in child.items:
                call = item.context_expr
                if isinstance(call, ast.Call) and getattr(call.func, "attr", None) == "name_scope" and call.args:
                    arg = call.args[0]
                    inner = inner + (arg.value if isinstance(arg, ast.Constant) else ast.unparse(arg),)
        if isinstance(child, ast.Call) and getattr(child.func, "attr", None) == "add_weight":
            name = next((kw.value for kw in child.keywords if kw.arg == "name"), child.args[0] if child.args else None)
            if name is not None:
                text = name.value if isinstance(name, ast.Constant) else ast.unparse(name)
                rows.append((module, cls, "/".join(inner), str(text)))
        _visit(child, inner, module, cls, rows)


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else transformers_dir()
    for row in add_weight_calls(root):
        print("\t".join(row))
