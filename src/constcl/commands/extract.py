"""``constcl extract SOURCE --checkpoint CK --out DIR``: features of every video of a source.

The work is :func:`constcl.features.extract.extract` (snippet positions, file layout, resuming,
bad videos, torchrun). Exit code 0 when the run finished, bad videos included (listed in
``OUT/report.json``) unless ``--strict``; 2 for unusable input, as one ``constcl: error:`` line.
"""

from __future__ import annotations

import argparse

from constcl.commands.settings_flags import add_settings_arguments, settings_from_args
from constcl.features.extract import ExtractSettings, extract

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`constcl.features.extract.ExtractSettings`
    (``settings_flags``); ``source`` is positional."""
    add_settings_arguments(parser, ExtractSettings, positional=("source",))


def run(args: argparse.Namespace) -> int:
    result = extract(settings_from_args(ExtractSettings, args))
    print(f"{result.total - len(result.bad)} of {result.total} videos extracted "
          f"({result.written} now, {result.reused} before), {len(result.bad)} bad"
          + (f" (see {args.out}/report.json)" if result.bad else "") + f"; index: {result.index}")
    return 0
