"""The test that keeps imports pointing down the layer map (tests/layer_map.py) with no cycle.

Every module of ``minigate`` (``minigate.gateway``, ``minigate.providers``, ``minigate.web``: the folders gateway/,
providers/ and web/, reached through the symlinks in minigate/) and ``minigate_plugins`` is named in ``LAYERS``,
bottom first; ``minigate.migrations`` is not, as Alembic loads its files by path. A module may import modules of its
own group or of a lower layer; groups sharing a layer are independent of each other. Every import counts: at module
level, in a function, under ``if TYPE_CHECKING:`` (only an ``if __name__ == "__main__":`` block is left out: it runs
the file as a script, never as this module).

A small AST walk rather than import-linter: it reads the same files mypy and ruff read, needs no package to be
installed (the tests run from a source tree), and the map stays a plain Python value this file can explain.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

from tests.layer_map import LAYERS

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("minigate", "minigate_plugins")
UNMAPPED = ("minigate.migrations",)  # Alembic's env.py and versions/, loaded by path


def _where() -> dict[str, tuple[int, str]]:
    """Each mapped module's ``(layer index, group)``."""
    found: dict[str, tuple[int, str]] = {}
    for index, (_, groups) in enumerate(LAYERS):
        for group, modules in groups.items():
            for module in modules:
                assert module not in found, f"{module} is mapped twice"
                found[module] = (index, group)
    return found


def _modules() -> dict[str, Path]:
    """Every mapped module by its installed name, ``minigate.gateway.app``: the walk follows minigate/'s symlinks."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for folder, dirs, files in os.walk(ROOT / package, followlinks=True):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(f for f in files if f.endswith(".py")):
                parts = (Path(folder) / name).relative_to(ROOT).with_suffix("").parts
                module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                if not any(module == u or module.startswith(f"{u}.") for u in UNMAPPED):
                    found[module] = Path(folder) / name
    return found


def _is_main_block(node: ast.stmt) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _imported(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The mapped modules ``module`` imports, anywhere in its file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    body = [node for node in tree.body if not _is_main_block(node)]
    names: set[str] = set()
    for node in (n for top in body for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                package = package[: len(package) - node.level + 1]
                base = ".".join([*package, base] if base else package)
            names.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names)
    targets = set()
    for name in names:
        while name and name not in known:
            name = name.rpartition(".")[0]
        if name and name != module:
            targets.add(name)
    return targets


def _graph() -> dict[str, set[str]]:
    known = _modules()
    return {module: _imported(module, path, known) for module, path in known.items()}


def test_every_module_is_in_the_map() -> None:
    """A new module must be given its layer here; a module that is gone must leave the map."""
    where, modules = _where(), _modules()
    assert sorted(set(modules) - set(where)) == [], "modules missing from LAYERS in tests/layer_map.py"
    assert sorted(set(where) - set(modules)) == [], "LAYERS names modules that do not exist"


def test_imports_point_down() -> None:
    """No module imports a higher layer, or another group of its own layer."""
    where = _where()
    wrong = []
    for module, targets in sorted(_graph().items()):
        if module not in where:
            continue
        layer, group = where[module]
        for target in sorted(targets):
            if target not in where:
                continue
            other, other_group = where[target]
            if other > layer or (other == layer and other_group != group):
                wrong.append(f"{module} ({LAYERS[layer][0]}/{group}) -> {target} ({LAYERS[other][0]}/{other_group})")
    assert wrong == []


# Modules of a minigate.gateway subpackage that sit in another layer than the subpackage itself, and why.
_ELSEWHERE = {
    "minigate.gateway.plugins.builtin_steps": "the built-in steps are a plugin like any other, beside the loader"
}


def test_each_subpackage_is_one_layer() -> None:
    """A subpackage of ``minigate.gateway`` holds one layer, so a module's folder says where it belongs."""
    where = _where()
    wrong = [
        module
        for module in sorted(where)
        if module.startswith("minigate.gateway.")
        and module.count(".") == 3
        and module not in _ELSEWHERE
        and where[module] != where[module.rpartition(".")[0]]
    ]
    assert wrong == []


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycle() -> None:
    """No set of modules imports itself round, counting imports under TYPE_CHECKING and in functions."""
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_cycles() -> None:
    """The check above would see a cycle, a self-contained one and one through a longer path."""
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
