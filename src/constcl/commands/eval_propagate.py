"""``constcl eval propagate``: flags -> :class:`constcl.eval.propagate.Settings` -> ``run``."""

from __future__ import annotations

import argparse

from constcl.commands.settings_flags import add_settings_arguments, settings_from_args
from constcl.eval import propagate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per field of :class:`constcl.eval.propagate.Settings` (``settings_flags``)."""
    add_settings_arguments(parser, propagate.Settings)


def run(args: argparse.Namespace) -> int:
    result = propagate.run(settings_from_args(propagate.Settings, args))
    _print_table(result)
    return 0


def _print_table(results: dict) -> None:
    m = results["metrics"]
    print(f"DAVIS-{results['split']}: {results['num_sequences']} sequences, "
          f"{results['num_objects']} objects, {results['stage']} features "
          f"(stride {results['stride']}), {results['seconds']:.1f} s")
    print("  ".join(f"{k} {v:.3f}" for k, v in m.items()))
    print(f"{'sequence':32s} objects  J&F-Mean  J-Mean  F-Mean")
    for name, s in results["per_sequence"].items():
        print(f"{name:32s} {s['objects']:7d}  {s['J&F-Mean']:8.3f}  {s['J-Mean']:6.3f}  "
              f"{s['F-Mean']:6.3f}")
