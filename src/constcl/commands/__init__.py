"""Command-line commands: each module parses arguments into a library call; library packages
never import this package.

Every module exposes ``add_arguments(parser)`` and ``run(args) -> int`` and is listed in
``constcl.cli.COMMANDS``.
"""
