"""``constcl viz regions RUN_DIR --video FILE --out PNG``: what the region branch matches and
attends to (:func:`constcl.viz.regions.run`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl.viz.regions import RegionsSettings
from constcl.viz.regions import run as run_regions

__all__ = ["add_arguments", "run"]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated box indices; got {text!r}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", type=Path, help="a pretraining run folder (with checkpoints/)")
    parser.add_argument("--video", type=Path, required=True, help="any video file")
    parser.add_argument("--out", type=Path, required=True, help="output image, e.g. regions.png")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint file (default: the run's newest loadable one)")
    parser.add_argument("--random-init", action="store_true",
                        help="the same network with freshly drawn weights, for contrast")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the sampled views (and of the random-init weights)")
    parser.add_argument("--queries", type=_int_list, default=(0, 1, 2),
                        help="view-a boxes whose attention is drawn, e.g. 0,3 (default 0,1,2)")
    parser.add_argument("--layer", type=int, default=None,
                        help="decoder layer (1-based) to draw; default: mean over layers")


def run(args: argparse.Namespace) -> int:
    settings = RegionsSettings(run_dir=args.run_dir, video=args.video, out=args.out,
                               checkpoint=args.checkpoint, random_init=args.random_init,
                               seed=args.seed, queries=args.queries, layer=args.layer)
    result = run_regions(settings)
    matched = sum(bool(m) for m in result.masks["a"].tolist())
    print(f"wrote {args.out} ({matched} view-a boxes matched; {result.label})")
    return 0
