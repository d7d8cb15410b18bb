"""Package layering: every module imports on its own, no library package imports the command
layer (``constcl.commands``, ``constcl.cli``), the import graph of ``src/constcl`` has no circle,
and no module imports one on a higher floor (:data:`FLOORS`).

Every import counts: module level, inside a function, and under ``TYPE_CHECKING``. To see the
graph: ``python -c "import tests.test_layering as t; print(t.import_graph(t.SRC, 'constcl'))"``.
"""

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

# The floors of the package, lowest first, by the first name under constcl/ (a top-level module
# or a sub-package; "" is constcl/__init__.py). A module may import modules of its own floor and
# of lower ones, never of a higher one. A new top-level module or package needs a floor here.
FLOORS: tuple[tuple[str, ...], ...] = (
    # 1. foundations: expected errors, process group, fault injection, schedules, run lock,
    # signal handling, the version
    ("errors", "dist", "faults", "schedule", "runlock", "sigterm", "version"),
    # 2. the networks and their losses (explicit arguments, no config)
    ("losses", "models"),
    # 3. what the applications read: videos, the pretraining config, the backbone file, the
    # network a config describes
    ("data", "config", "backbone_file", "network"),
    # 4. the applications: pretraining, evaluations, features, conversion, report, pictures
    ("engine", "eval", "features", "convert", "report", "viz"),
    # 5. the benchmark runs pretraining and evaluations
    ("benchmark",),
    # 6. entry points: the command layer and the package's own face (constcl.load_encoder)
    ("commands", "cli", "__main__", ""),
)

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


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Module name -> file of every module under ``root`` (the folder of ``package``)."""
    files = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        files[".".join(parts)] = path
    return files


def import_graph(root: Path, package: str) -> dict[str, set[str]]:
    """Module -> the modules of ``package`` it imports, wherever the import stands (module
    level, in a function, under ``TYPE_CHECKING``), relative imports resolved.
    ``from a import b`` is an import of ``a.b`` when that is a module, else of ``a``."""
    files = module_files(root, package)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")[: len(here.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in files else module
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:  # import a.b.c of a non-module name
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: strongly connected sets of two or more modules (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def floor_of(module: str, floors: tuple[tuple[str, ...], ...]) -> int | None:
    """The floor (0 = lowest) of ``package.first[.rest]`` by ``first``; None when unlisted."""
    first = module.split(".")[1] if "." in module else ""
    return next((i for i, names in enumerate(floors) if first in names), None)


def upward_imports(graph: dict[str, set[str]], floors: tuple[tuple[str, ...], ...]
                   ) -> list[str]:
    """``"a -> b"`` for every import of a module on a higher floor than the importer's."""
    bad = []
    for name, targets in sorted(graph.items()):
        own = floor_of(name, floors)
        for target in sorted(targets):
            other = floor_of(target, floors)
            if own is not None and other is not None and other > own:
                bad.append(f"{name} (floor {own + 1}) -> {target} (floor {other + 1})")
    return bad


def test_every_module_has_a_floor():
    graph = import_graph(SRC, "constcl")
    assert [m for m in graph if floor_of(m, FLOORS) is None] == []
    listed = [name for names in FLOORS for name in names]
    assert len(listed) == len(set(listed))


def test_the_import_graph_has_no_circle():
    assert circles(import_graph(SRC, "constcl")) == []


def test_no_module_imports_a_higher_floor():
    assert upward_imports(import_graph(SRC, "constcl"), FLOORS) == []


def test_the_checks_find_circles_and_upward_imports(tmp_path):
    """The checks on a small package with one circle of each kind they must see (a function's
    import, a ``TYPE_CHECKING`` import, a relative import) and one upward import."""
    root = tmp_path / "pkg"
    (root / "low").mkdir(parents=True)
    (root / "high").mkdir()
    files = {
        "__init__.py": "",
        "low/__init__.py": "",
        "low/a.py": "def f():\n    from pkg.low import b\n",
        "low/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                    "    from pkg.low.a import f\n",
        "low/c.py": "from ..high.d import g\n",
        "high/__init__.py": "",
        "high/d.py": "import pkg.low.c\nfrom .e import h\ng = 1\n",
        "high/e.py": "from pkg.high import d\nh = 2\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    graph = import_graph(root, "pkg")
    assert graph["pkg.low.a"] == {"pkg.low.b"} and graph["pkg.low.c"] == {"pkg.high.d"}
    assert circles(graph) == [["pkg.high.d", "pkg.high.e", "pkg.low.c"], ["pkg.low.a",
                                                                          "pkg.low.b"]]
    floors = (("low",), ("high",))
    assert upward_imports(graph, floors) == ["pkg.low.c (floor 1) -> pkg.high.d (floor 2)"]
    assert floor_of("pkg", floors) is None and floor_of("pkg", floors + (("",),)) == 2
