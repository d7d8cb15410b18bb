"""``constcl bench``: flags -> :class:`constcl.benchmark.Budget` -> ``run_bench``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from constcl.benchmark import Budget, run_bench
from constcl.models.constcl import VARIANTS


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _variant_list(text: str) -> tuple[str, ...]:
    names = tuple(x.strip() for x in text.split(",") if x.strip())
    for name in names:
        if name not in VARIANTS:
            raise argparse.ArgumentTypeError(f"unknown variant {name!r}; allowed: {list(VARIANTS)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags; each sets the :class:`constcl.benchmark.Budget` field of that name."""
    d = Budget()
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder")
    parser.add_argument("--steps", type=int, default=d.steps, help="pretraining steps per run")
    parser.add_argument("--videos", type=int, default=d.videos, help="videos in the world")
    parser.add_argument("--backbone", default=d.backbone)
    parser.add_argument("--frames", type=int, default=d.frames)
    parser.add_argument("--size", type=int, default=d.size)
    parser.add_argument("--batch", type=int, default=d.batch, help="videos per pretraining step")
    parser.add_argument("--seeds", type=_int_list, default=d.seeds,
                        help="training seeds, comma-separated (default 0,1,2)")
    parser.add_argument("--world-seed", type=int, default=d.world_seed,
                        help="the synthetic world's own seed")
    parser.add_argument("--variants", type=_variant_list, default=d.variants,
                        help="comma-separated subset of cvrl,region,constcl (default cvrl,constcl)")
    parser.add_argument("--color-strength", type=float, default=None,
                        help="colour augmentation strength (default: the demo preset's)")
    parser.add_argument("--probe-weight-decay", type=float, default=d.probe_weight_decay)
    parser.add_argument("--otb-sequences", type=int, default=d.otb_sequences,
                        help="OTB targets tracked per encoder, spread evenly over the list "
                        "sorted by name (one is worth about 100 / N points); changing it in an "
                        "existing --out re-evaluates only tracking")
    parser.add_argument("--davis-sequences", type=int, default=d.davis_sequences,
                        help="DAVIS sequences propagated per encoder; changing it in an "
                        "existing --out re-evaluates only propagation")
    parser.add_argument("--set", dest="extra", action="append", default=[],
                        metavar="section.key=value", help="extra pretraining override")
    parser.add_argument("--seed", type=int, default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    seeds = (args.seed,) if args.seed is not None else args.seeds
    b = Budget(args.steps, args.videos, args.backbone, args.frames, args.size, args.batch,
               tuple(seeds), args.world_seed, tuple(args.variants), args.color_strength,
               args.probe_weight_decay, args.otb_sequences, args.davis_sequences,
               list(args.extra))
    command = "constcl bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if sys.argv[1:2] == ["bench"] else "constcl bench"
    run_bench(b, args.out, command)
    out = args.out.resolve()
    print(f"wrote {out / 'RESULTS.md'} and {out / 'report.html'}")
    return 0
