"""The import graph of cifar/ and stages/, and the command-line options of any program,
read from the source (no module is run)."""

import ast
from pathlib import Path

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


def reachable(start: str, skip: frozenset[str] = frozenset()) -> set[str]:
    """start and every project module it imports, directly or through others, but `skip`'s."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name in skip:
            continue
        seen.add(name)
        todo += imported_modules(MODULES[name])
        # Importing cifar.models.resnet runs cifar/models/__init__.py first.
        parents = (".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1))
        todo += [parent for parent in parents if parent in MODULES]
    return seen


def declared_options(source: Path) -> dict[str, ast.Call]:
    """Every option string of source's argparse add_argument calls, with its call."""
    return {
        argument.value: node
        for node in ast.walk(ast.parse(source.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "add_argument"
        for argument in node.args
        if isinstance(argument, ast.Constant) and str(argument.value).startswith("-")
    }
