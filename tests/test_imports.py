"""The code's shape: no import cycles among the modules of cifar/ and stages/, and each says
its concern in a docstring at its top."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = sorted([*(REPO / "cifar").rglob("*.py"), *(REPO / "stages").glob("*.py")])


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in FILES}


def imported_modules(path: Path) -> set[str]:
    """The project modules a file imports, at its top or inside a function alike."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from cifar import archives` imports the module cifar.archives.
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names}
    return found & MODULES.keys()


def test_no_module_imports_itself_through_others():
    graph = {name: imported_modules(path) for name, path in MODULES.items()}
    finished, trail = set(), []

    def visit(name):
        if name in trail:
            pytest.fail("import cycle: " + " -> ".join(trail[trail.index(name):] + [name]))
        if name in finished:
            return
        trail.append(name)
        for imported in sorted(graph[name]):
            visit(imported)
        trail.pop()
        finished.add(name)

    for name in sorted(graph):
        visit(name)
    assert "cifar.engine" in graph["stages.train"] and "cifar.config" in graph["cifar.engine"], "the graph was read"


@pytest.mark.parametrize("path", FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_each_module_says_its_concern_at_its_top(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and len(docstring.split()) >= 4, f"{path.name}: no docstring saying what it is for"
