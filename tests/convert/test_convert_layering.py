"""``constcl.convert`` is a library package: it never imports the command layer."""

from __future__ import annotations

import ast
from pathlib import Path

import constcl.convert

PACKAGE = Path(constcl.convert.__file__).parent


def test_convert_does_not_import_the_command_layer() -> None:
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            for name in names:
                assert not name.startswith(("constcl.commands", "constcl.cli")), (path, name)
                assert name not in ("tensorflow", "tf_keras"), (path, name)
