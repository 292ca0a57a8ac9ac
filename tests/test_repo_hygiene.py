"""Hygiene of the test suite itself: test modules share code through ``tests/conftest.py``
fixtures, never by importing each other (an import runs the other module's module-level code
and couples their collection, and a helper moved or renamed there breaks an unrelated module)."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, top-level module name) of every import statement, relative ones included."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name.split(".")[0]) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.module:
                out.append((node.lineno, node.module.split(".")[0]))
            if node.level:  # from . import test_x
                out += [(node.lineno, a.name) for a in node.names]
    return out


def _test_module_imports(folder: Path) -> list[str]:
    own = {p.stem for p in folder.glob("*.py")}
    shared = {m for m in own if m.startswith("test_") or m == "conftest"}
    found = []
    for path in sorted(folder.glob("*.py")):
        if path.name == "conftest.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        found += [f"{path.name}:{line}: imports {mod}" for line, mod in _imported_modules(tree)
                  if mod in shared]
    return found


def test_no_test_module_imports_another():
    found = _test_module_imports(TESTS)
    assert not found, ("test modules import each other (move the shared code into a "
                       "tests/conftest.py fixture):\n" + "\n".join(found))


def test_the_check_sees_such_imports(tmp_path):
    (tmp_path / "conftest.py").write_text("X = 1\n")
    (tmp_path / "test_a.py").write_text("HELPER = 1\n")
    (tmp_path / "test_b.py").write_text("import os\nfrom test_a import HELPER\n")
    (tmp_path / "test_c.py").write_text("import test_a.sub as s\nfrom . import test_b\n")
    (tmp_path / "test_d.py").write_text("from conftest import X\nimport numpy\n")
    assert _test_module_imports(tmp_path) == [
        "test_b.py:2: imports test_a", "test_c.py:1: imports test_a",
        "test_c.py:2: imports test_b", "test_d.py:1: imports conftest"]
