"""``constcl bench``: flags -> :class:`constcl.benchmark.Budget` -> ``run_bench``."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from constcl.benchmark import LOCAL_SETS, Budget, run_bench
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
    parser.add_argument("--steps", type=_int_list, default=(d.steps,),
                        help="pretraining steps per run; a list (600,2400,6000) adds a budget-"
                        "scaling study: the first is the base budget of the main tables, the "
                        "others run --scaling-variants and get a section of their own "
                        f"(default {d.steps})")
    parser.add_argument("--scaling-variants", type=_variant_list, default=d.scaling_variants,
                        help="variants pretrained at the extra budgets of --steps (default "
                        f"{','.join(d.scaling_variants)})")
    parser.add_argument("--local-sets", choices=LOCAL_SETS, default=d.local_sets,
                        help="OTB / DAVIS sets of the tracking columns: v3 (look-alike "
                        "instances, docs/synthetic_world.md) or v2 (the world's own val "
                        f"tracks); default {d.local_sets}")
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
                        help="comma-separated subset of " + ",".join(VARIANTS)
                        + f" (default {','.join(d.variants)})")
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
    if not args.steps:
        raise ValueError("--steps needs at least one number")
    b = Budget(steps=args.steps[0], videos=args.videos, backbone=args.backbone,
               frames=args.frames, size=args.size, batch=args.batch, seeds=tuple(seeds),
               world_seed=args.world_seed, variants=tuple(args.variants),
               color_strength=args.color_strength, probe_weight_decay=args.probe_weight_decay,
               otb_sequences=args.otb_sequences, davis_sequences=args.davis_sequences,
               extra=list(args.extra), local_sets=args.local_sets,
               scaling_steps=tuple(args.steps[1:]),
               scaling_variants=tuple(args.scaling_variants))
    command = "constcl bench " + " ".join(shlex.quote(a) for a in sys.argv[2:]) \
        if sys.argv[1:2] == ["bench"] else "constcl bench"
    run_bench(b, args.out, command)
    out = args.out.resolve()
    print(f"wrote {out / 'RESULTS.md'} and {out / 'report.html'}")
    return 0
