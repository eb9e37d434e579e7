"""The house rules of docs/architecture.md, checked on the source: one-way layers, no cycles, no private borrowing.

Every ``import`` counts, also those inside functions (a lazy import hides a
cycle from Python but not from a reader).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "napari_lesionmix"
#: Layers, lowest first: a module may import its own layer and those below.
RANK = {"": 0, "errors": 0, "random": 0, "io": 1, "sample_data": 1, "augment": 2, "harmonize": 3,
        "integrations": 4, "export": 4, "evaluate": 5, "cli": 5, "widgets": 5, "_reader": 5, "_writer": 5, "_sample_data": 5}
#: Anything else at the top (entry points such as ``studio``) is above everything.
TOP = 6
#: The only places where Qt or napari may be imported.
QT_ALLOWED = ("widgets", "_reader", "_writer", "_sample_data")


def _modules() -> dict[str, ast.Module]:
    out = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        parts = f.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(f.read_text(), filename=str(f))
    return out


MODULES = _modules()


def _layer(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, RANK.get(top, TOP)


def _imports(module: str, tree: ast.Module):
    """``(line, imported module, names)`` of every import of our package in ``tree``."""
    is_pkg = (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("napari_lesionmix"):
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    yield node.lineno, sub if sub in MODULES else target, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("napari_lesionmix"):
                    yield node.lineno, alias.name, None


def _owner(target: str) -> str:
    """The module of ``target`` (a module, or a package whose ``__init__`` defines the name)."""
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def test_imports_run_downwards_only():
    upward = []
    for module, tree in MODULES.items():
        top, rank = _layer(module)
        for line, target, _ in _imports(module, tree):
            ttop, trank = _layer(_owner(target))
            if trank > rank and ttop != top:
                upward.append(f"{module}:{line} imports {target}")
    assert not upward, "imports against the layering (io < augment < harmonize < export < cli, widgets):\n" + \
        "\n".join(upward)


def test_no_private_names_across_modules():
    borrowed = []
    for module, tree in MODULES.items():
        aliases = {}
        for line, target, name in _imports(module, tree):
            owner = _owner(target)
            if name and name.startswith("_") and not name.startswith("__") and owner != module:
                borrowed.append(f"{module}:{line} takes {name} from {owner}")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("napari_lesionmix") and alias.asname:
                        aliases[alias.asname] = alias.name
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("napari_lesionmix"):
                # ``from napari_lesionmix.augment import registry`` binds a module: ``registry._x`` borrows too.
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    if sub in MODULES and sub != module:
                        aliases[alias.asname or alias.name] = sub
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                borrowed.append(f"{module}:{node.lineno} calls {aliases[node.value.id]}.{node.attr}")
    assert not borrowed, "\n".join(borrowed)


def test_the_import_graph_has_no_cycles():
    graph = {m: set() for m in MODULES}
    for module, tree in MODULES.items():
        for _, target, _ in _imports(module, tree):
            owner = _owner(target)
            # A package's __init__ importing its own submodules (re-exports) is not a cycle of design.
            if owner != module and not owner.startswith(module + "."):
                graph[module].add(owner)
    state: dict[str, int] = {}
    cycles = []

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("forbidden", ["qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "napari"])
def test_the_core_never_imports_qt_or_napari(forbidden):
    offenders = []
    for module, tree in MODULES.items():
        top, _ = _layer(module)
        if top in QT_ALLOWED:
            continue
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            if any(n == forbidden or n.startswith(forbidden + ".") for n in names):
                offenders.append(f"{module}:{node.lineno}")
    assert not offenders, f"{forbidden} imported in the core: {offenders}"


def test_every_sources_implementation_has_every_protocol_method():
    # A face's Sources (export context, studio session, donor pools...) that lacks a method the
    # protocol gained fails only when a method reaches it: find them by what they define.
    import inspect

    from napari_lesionmix.augment.registry import Sources

    wanted = {name for name, _ in inspect.getmembers(Sources, inspect.isfunction) if not name.startswith("_")}
    assert {"case", "brain_mask", "training_set", "training_cases", "cached"} <= wanted
    found = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name != "Sources":
                defined = {f.name for f in node.body if isinstance(f, ast.FunctionDef)}
                if {"training_set", "cached"} <= defined:
                    found.append(node.name)
                    assert wanted <= defined, (path.name, node.name, sorted(wanted - defined))
    assert len(found) >= 6, found
