"""The sync core's layout rules (see the README's "Code map"): imports flow
one way, ``asgiref.sync`` → ``asgiref._bridge`` → ``asgiref._compat`` →
the standard library; modules stay small enough to read in one sitting, and
each opens with what it guarantees.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

pytest.importorskip("asgire")  # upstream runs lack these modules

pytestmark = pytest.mark.asgire_only

PACKAGE = Path(__file__).parent.parent / "src" / "asgiref"
BRIDGE = sorted((PACKAGE / "_bridge").glob("*.py"))
STDLIB = set(sys.stdlib_module_names) | {"__future__"}
# What a module's opening says: what it guarantees, relies on, and owns.
HEADINGS = (r"^(What it )?[Gg]uarantees", r"^(What it r|R)elies on", r"^State:")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """The modules ``path`` imports, absolute, outside ``if TYPE_CHECKING:``."""
    tree = ast.parse(path.read_text())
    package = _module_name(path).rpartition(".")[0]
    if path.name == "__init__.py":
        package = _module_name(path)
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # ``from . import x`` imports the submodule x.
            for alias in node.names:
                if f"{base}.{alias.name}" in _all_modules():
                    found.add(f"{base}.{alias.name}")
    return found


def _all_modules() -> set[str]:
    return {_module_name(path) for path in PACKAGE.rglob("*.py")}


def _ours(names: set[str]) -> set[str]:
    return {name for name in names if name.partition(".")[0] == "asgiref"}


def test_nothing_in_the_core_imports_sync() -> None:
    for path in [*BRIDGE, PACKAGE / "_compat.py"]:
        assert "asgiref.sync" not in _imports(path), path.name


def test_compat_and_the_leaves_import_only_the_standard_library() -> None:
    assert {n.partition(".")[0] for n in _imports(PACKAGE / "_compat.py")} <= STDLIB
    for leaf in ("local.py", "current_thread_executor.py"):
        imported = _imports(PACKAGE / leaf)
        assert _ours(imported) <= {"asgiref._compat"}, leaf
        assert {n.partition(".")[0] for n in imported - _ours(imported)} <= STDLIB


def test_the_mechanisms_import_each_other_without_cycles() -> None:
    graph = {
        _module_name(path): _ours(_imports(path)) - {"asgiref._bridge"}
        for path in BRIDGE
    }
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join([*path, module])
        if module in done or module not in graph:
            return
        for imported in graph[module]:
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


@pytest.mark.parametrize(
    "path",
    [
        *BRIDGE,
        PACKAGE / "_compat.py",
        PACKAGE / "sync.py",
        PACKAGE / "local.py",
        PACKAGE / "current_thread_executor.py",
    ],
    ids=lambda path: path.name,
)
def test_each_module_is_short_and_opens_with_what_it_guarantees(path: Path) -> None:
    lines = path.read_text().count("\n")
    assert lines <= (900 if path.name == "sync.py" else 400)
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring
    if path.name not in ("__init__.py", "sync.py"):
        for heading in HEADINGS:
            assert re.search(heading, docstring, re.MULTILINE), heading
