"""Bare first-party names stay out: gateway, providers, web and migrations are importable as top-level packages
from the repository root, but only ``minigate.*`` is installed, and a module imported under both names is two
modules. An AST walk over every Python file of the repository (the same kind as tests/test_layers.py's)."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BARE = ("gateway", "providers", "web", "migrations")  # the folders minigate/ links to, never imported by these names

_SKIPPED = {".git", ".venv", "node_modules", "build", "dist", "test-artifacts", "__pycache__"}


def _python_files() -> list[Path]:
    """Every Python file of the repository (its own files, not minigate/'s links to them, nor venvs and caches)."""
    found = []
    for folder, dirs, files in os.walk(ROOT):  # does not follow minigate/'s symlinks: each file once
        dirs[:] = sorted(d for d in dirs if d not in _SKIPPED and not d.startswith(".") and not d.endswith(".egg-info"))
        found.extend(Path(folder) / name for name in sorted(files) if name.endswith(".py"))
    return found


def _bare_uses(tree: ast.AST) -> list[tuple[int, str]]:
    """``(line, what)`` for each import of a bare name, and each string naming a bare module path or package."""
    dotted = re.compile(rf"(?<![\w./-])({'|'.join(BARE)})\.(\w+)")
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name.split(".")[0] in BARE]
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] in BARE:
            found.append((node.lineno, f"from {node.module} import"))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            # A real module's dotted path without its minigate. prefix: -m arguments, mock targets, plugin paths.
            for match in dotted.finditer(node.value):
                top, second = match.groups()
                if (ROOT / top / f"{second}.py").is_file() or (ROOT / top / second / "__init__.py").is_file():
                    found.append((node.lineno, repr(match.group(0))))
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            # importlib.resources.files() or importlib.import_module() given a bare package's name
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name in ("files", "import_module", "find_spec") and node.args[0].value in BARE:
                found.append((node.lineno, f"{name}({node.args[0].value!r})"))
    return sorted(found)


def test_first_party_names_start_with_minigate() -> None:
    """Every import of minigate's code, and every string naming one of its modules, says ``minigate.``.

    From the repository root the bare names import too (gateway/ is a package folder), but as a second copy of
    every module (its own classes, its own registries), and an installed minigate has no ``gateway`` package at all.
    """
    wrong = []
    for path in _python_files():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        wrong += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in _bare_uses(tree)]
    assert wrong == [], "use minigate.gateway, minigate.providers, minigate.web, minigate.migrations"


def test_the_bare_name_check_finds_bare_names() -> None:
    """The check above sees each kind of bare name, and lets the namespaced ones and look-alikes through."""
    names = {"g": "gateway", "p": "providers", "w": "web", "m": "migrations"}  # spelled apart: this file is checked
    source = """
import {g}.app
import {p}.onnx.store as store
from {w} import web_routes
from {m}.versions import x
files("{m}")
cmd = ["-m", "{g}.cli"]
kind = "{p}.base"
"""
    assert [line for line, _ in _bare_uses(ast.parse(source.format(**names)))] == [2, 3, 4, 5, 6, 7, 8]
    fine = """
import minigate.{g}.app
from minigate.{w} import web_routes
from minigate_plugins.redact import Redact
files("minigate.{m}")
cmd = ["-m", "minigate.{g}.cli"]
log = "{g}.log"
url = f"{{{g}.url}}/v1"
"""
    assert _bare_uses(ast.parse(fine.format(**names))) == []
