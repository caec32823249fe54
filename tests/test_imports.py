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
    assert "cifar.training.engine" in graph["stages.train"] and "cifar.config" in graph["cifar.training.engine"], (
        "the graph was read"
    )


@pytest.mark.parametrize("path", FILES, ids=lambda path: str(path.relative_to(REPO)))
def test_each_module_says_its_concern_at_its_top(path):
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring and len(docstring.split()) >= 4, f"{path.name}: no docstring saying what it is for"


def top_level_imports(path) -> set[str]:
    """The first name of every absolute import in the file: `cifar`, `stages`, `torch`, ..."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module.split(".")[0])
    return found


def test_the_library_imports_nothing_above_it():
    """cifar/ is the layer under the stages, the benchmark and the scripts: a pip-installed
    copy, as a notebook has it, has none of them to import."""
    upward = {
        name: sorted(top_level_imports(path) & {"stages", "bench", "scripts", "tests"})
        for name, path in MODULES.items()
        if name.startswith("cifar")
    }
    assert {name: found for name, found in upward.items() if found} == {}


# cifar/'s layers, lowest first; a module imports only from its own layer or those below.
# Everything else in cifar/ (params, dataset format, files, runtime, errors) is the base, 0.
LAYERS = {"cifar.ingest": 1, "cifar.models": 1, "cifar.training": 2, "cifar.reporting": 3, "cifar.notebook": 4}


def layer(module: str) -> int:
    return next((rank for prefix, rank in LAYERS.items() if module == prefix or module.startswith(prefix + ".")), 0)


def test_no_module_of_cifar_imports_a_layer_above_its_own():
    upward = sorted(
        f"{name} -> {imported}"
        for name, path in MODULES.items()
        if name.startswith("cifar")
        for imported in imported_modules(path)
        if layer(imported) > layer(name)
    )
    assert upward == []
