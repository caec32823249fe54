"""The code's shape: no import cycles among the modules of cifar/ and stages/, and each says
its concern in a docstring at its top."""

import ast

import pytest

from code_graph import FILES, MODULES, REPO, imported_modules


def test_no_module_imports_itself_through_others():
    graph = {name: imported_modules(path) for name, path in MODULES.items()}
    finished, trail = set(), []

    def visit(name):
        if name in trail:
            pytest.fail("import cycle: " + " -> ".join([*trail[trail.index(name) :], name]))
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
