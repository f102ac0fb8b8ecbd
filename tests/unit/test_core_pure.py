"""The pure core imports no I/O: numpy, the data model and the policy dataclasses only.

Checked on the source (every import statement of every module under wghybrid/core/), so
that an import added inside a function is caught as well as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import wghybrid.core

CORE = Path(wghybrid.core.__file__).parent
ALLOWED = {"__future__", "collections", "dataclasses", "enum", "heapq", "math", "typing",
           "numpy", "wghybrid.model", "wghybrid.policy", "wghybrid.core"}


def _imports(path: Path) -> list[tuple[int, str]]:
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                out.append((node.lineno, "wghybrid.core"))
            else:
                out.append((node.lineno, node.module or ""))
    return out


def _allowed(name: str) -> bool:
    return any(name == a or name.startswith(a + ".") for a in ALLOWED)


MODULES = sorted(CORE.glob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[p.name for p in MODULES])
def test_core_module_imports_no_io(path: Path) -> None:
    bad = [f"{path.name}:{line}: import {name}" for line, name in _imports(path)
           if not _allowed(name)]
    assert not bad, "the pure core must not import I/O: " + "; ".join(bad)


def test_the_check_catches_an_io_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    import asyncio\n    from os import path\n")
    names = [n for _, n in _imports(bad) if not _allowed(n)]
    assert names == ["asyncio", "os"]
