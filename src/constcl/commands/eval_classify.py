"""``constcl eval classify``: flags -> :class:`constcl.eval.classify.Settings` -> ``run``."""

from __future__ import annotations

import argparse

from constcl.commands.settings_flags import add_settings_arguments, settings_from_args
from constcl.eval import classify


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`constcl.eval.classify.Settings` (``settings_flags``)."""
    add_settings_arguments(parser, classify.Settings)


def run(args: argparse.Namespace) -> int:
    result = classify.run(settings_from_args(classify.Settings, args))
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    print(f"classify ({result['mode']}, {result['branch']}) on {result['layout']} split "
          f"{result['split']}: {metrics} over {result['videos_evaluated']['test']} test videos "
          f"-> {args.out}")
    return 0
