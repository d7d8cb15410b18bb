"""``constcl eval detect``: flags -> :class:`constcl.eval.detect.Settings` -> ``run``."""

from __future__ import annotations

import argparse

from constcl.commands.settings_flags import add_settings_arguments, settings_from_args
from constcl.eval import detect


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`constcl.eval.detect.Settings` (``settings_flags``)."""
    add_settings_arguments(parser, detect.Settings)


def run(args: argparse.Namespace) -> int:
    result = detect.run(settings_from_args(detect.Settings, args))
    print(f"detect ({result['boxes']} boxes, {result['branch']}): frame mAP@0.5 "
          f"{result['metrics']['map']:.4f} over {result['num_classes']} classes, "
          f"{result['boxes_encoded']['val']} val boxes -> {args.out}")
    return 0
