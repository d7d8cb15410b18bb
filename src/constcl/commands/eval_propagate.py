"""``constcl eval propagate``: flags -> :class:`constcl.eval.propagate.Settings` -> ``run``."""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl.commands.eval_args import (
    add_encoder_arguments,
    add_frame_encoder_arguments,
    settings_from_args,
)
from constcl.eval import propagate
from constcl.eval.propagate.algorithm import PropagationConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags; each is the :class:`constcl.eval.propagate.Settings` field of that name
    (temperature, topk, context and radius are the fields of its ``propagation``)."""
    add_encoder_arguments(parser)
    parser.add_argument("--data", required=True, type=Path,
                        help="DAVIS root (JPEGImages/, Annotations/, ImageSets/), or a "
                             "synthetic world root holding davis/")
    parser.add_argument("--split", default="val", help="ImageSets/<year>/<split>.txt")
    parser.add_argument("--year", default="2017", help="ImageSets/<year>")
    parser.add_argument("--resolution", default="480p", help="JPEGImages/<resolution>")
    parser.add_argument("--sequences", type=int, default=None,
                        help="evaluate only the first N sequences of the list; quick runs")
    add_frame_encoder_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=8, help="frames encoded at once")
    d = PropagationConfig()
    parser.add_argument("--temperature", type=float, default=d.temperature,
                        help="affinity softmax temperature (CRW 0.05, VFS 0.07); lower is "
                             "closer to nearest-neighbour copying")
    parser.add_argument("--topk", type=int, default=d.topk, help="keys kept per query cell")
    parser.add_argument("--context", type=int, default=d.context,
                        help="previous frames in the queue, besides the first frame")
    parser.add_argument("--radius", type=float, default=d.radius,
                        help="spatial radius in feature cells for the queue's keys (CRW 12, "
                             "VFS 24; <= 0: none); the first frame is never restricted")
    parser.add_argument("--overlay-sequences", type=int, default=3,
                        help="sequences that get an overlay image")
    parser.add_argument("--overlay-frames", type=int, default=5,
                        help="frames per overlay image, evenly spaced")
    parser.add_argument("--no-masks", action="store_true",
                        help="do not write the predicted palette PNGs under OUT/masks")


def run(args: argparse.Namespace) -> int:
    cfg = PropagationConfig(temperature=args.temperature, topk=args.topk, context=args.context,
                            radius=args.radius)
    result = propagate.run(settings_from_args(propagate.Settings, args, propagation=cfg,
                                              write_masks=not args.no_masks))
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
