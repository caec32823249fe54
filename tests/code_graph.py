"""The import graph of cifar/ and stages/, and the command-line options of any program,
read from the source (no module is run)."""

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FILES = sorted([*(REPO / "cifar").rglob("*.py"), *(REPO / "stages").glob("*.py")])


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in FILES}


def _lazy_nodes(tree: ast.Module) -> set[int]:
    """The nodes inside a module-level `__getattr__` (PEP 562): its imports run only when a
    name the module does not define is read from it, not when the module is imported."""
    return {
        id(node)
        for function in tree.body
        if isinstance(function, ast.FunctionDef) and function.name == "__getattr__"
        for node in ast.walk(function)
    }


def _imports(nodes) -> set[str]:
    found = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from cifar.ingest import archives` imports the module cifar.ingest.archives.
            found |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            }
    return found & MODULES.keys()


def imported_modules(path: Path) -> set[str]:
    """The project modules a file imports when it runs, at its top or inside a function alike
    (but not inside a module `__getattr__`: see lazy_imports)."""
    tree = ast.parse(path.read_text())
    lazy = _lazy_nodes(tree)
    return _imports(node for node in ast.walk(tree) if id(node) not in lazy)


def third_party_imports(path: Path) -> set[str]:
    """The top-level names of the installed packages a file imports when it runs (not the
    standard library's, not the project's own)."""
    tree = ast.parse(path.read_text())
    lazy = _lazy_nodes(tree)
    names = set()
    for node in ast.walk(tree):
        if id(node) in lazy:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__", "cifar", "stages"}


def lazy_imports(path: Path) -> set[str]:
    """The project modules a file's module `__getattr__` imports on a lazy attribute's first read."""
    tree = ast.parse(path.read_text())
    lazy = _lazy_nodes(tree)
    return _imports(node for node in ast.walk(tree) if id(node) in lazy)


def lazy_reads(path: Path) -> set[str]:
    """The project packages a file reads a name from that is no module of theirs (`from cifar
    import train`, or `cifar.train` after `import cifar`): their `__getattr__` runs."""
    tree = ast.parse(path.read_text())
    read = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in MODULES:
            read |= {node.module for a in node.names if f"{node.module}.{a.name}" not in MODULES}
        elif isinstance(node, ast.Attribute):
            chain = [node.attr]
            value = node.value
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if isinstance(value, ast.Name):
                dotted = [value.id, *chain]
                # The longest module prefix of `a.b.c`, and the name read from it.
                for cut in range(len(dotted) - 1, 0, -1):
                    owner = ".".join(dotted[:cut])
                    if owner in MODULES:
                        if ".".join(dotted[: cut + 1]) not in MODULES:
                            read.add(owner)
                        break
    return read


def reachable(start: str) -> set[str]:
    """start and every project module that running it runs: what it imports, directly or
    through others, the __init__ of every package on the way, and a package's lazily
    imported modules once some module reads one of its lazy names."""
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo += imported_modules(MODULES[name])
        # Importing cifar.models.resnet runs cifar/__init__.py and cifar/models/__init__.py first.
        parents = (".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1))
        todo += [parent for parent in parents if parent in MODULES]
        for package in lazy_reads(MODULES[name]):
            todo += lazy_imports(MODULES[package])
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
