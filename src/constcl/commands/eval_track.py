"""``constcl eval track``: flags -> :class:`constcl.eval.track.Settings` -> ``run``."""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl.commands.settings_flags import add_settings_arguments, settings_from_args
from constcl.eval import track


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`constcl.eval.track.Settings` (``settings_flags``)."""
    add_settings_arguments(parser, track.Settings)


def run(args: argparse.Namespace) -> int:
    result = track.run(settings_from_args(track.Settings, args))
    m = result["metrics"]
    print(f"OTB OPE, {result['num_sequences']} targets, SiamFC on {result['stage']} (stride "
          f"{result['stride']}): precision@20px {m['precision_20']:.3f}  success AUC "
          f"{m['success_auc']:.3f}  success rate {m['success_rate']:.3f}  {m['fps']:.1f} fps")
    print(f"wrote {Path(args.out) / 'results.json'}, {', '.join(result['plots'])}")
    return 0
