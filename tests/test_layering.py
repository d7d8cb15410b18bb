"""Package layering: every module imports on its own (no import cycles), and no library package
imports the command layer (``constcl.commands``, ``constcl.cli``)."""

from __future__ import annotations

import ast
import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import constcl

SRC = Path(constcl.__file__).parent
LIBRARY_PACKAGES = ("models", "losses", "data", "engine", "eval", "convert", "features")
COMMAND_MODULES = ("constcl.commands", "constcl.cli")

# Files that still import the command layer, relative to src/constcl.
ALLOWED: set[str] = set()

_IMPORT_EACH = """
import importlib, json, sys
failures = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "constcl" or m.startswith("constcl.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as err:  # report every module, not just the first failure
        failures[name] = f"{type(err).__name__}: {err}"
print(json.dumps(failures))
"""


def all_modules() -> list[str]:
    names = ["constcl"]
    for info in pkgutil.walk_packages([str(SRC)], prefix="constcl."):
        names.append(info.name)
    return sorted(names)


def test_walk_finds_the_packages():
    names = all_modules()
    for package in LIBRARY_PACKAGES + ("commands",):
        assert f"constcl.{package}" in names
    assert "constcl.commands.pretrain" in names and "constcl.engine.pretrain" in names


def test_every_module_imports_alone():
    """Each module is imported first in a clean module table, so a cycle that only shows when
    the import starts at that module fails here."""
    names = all_modules()
    out = subprocess.run([sys.executable, "-c", _IMPORT_EACH, json.dumps(names)],
                         capture_output=True, text=True, timeout=300, check=True)
    failures = json.loads(out.stdout.strip().splitlines()[-1])
    assert failures == {}


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (``from x import y`` gives x and x.y)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_library_packages_never_import_the_command_layer():
    offenders = {}
    for package in LIBRARY_PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            rel = path.relative_to(SRC).as_posix()
            bad = sorted(m for m in imported_modules(path)
                         if any(m == c or m.startswith(c + ".") for c in COMMAND_MODULES))
            if bad and rel not in ALLOWED:
                offenders[rel] = bad
    assert offenders == {}
