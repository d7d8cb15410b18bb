"""``constcl info``: parameter counts per part and FLOPs per clip of a ConST-CL model.

The counting lives in :mod:`constcl.models.info`; this module parses the options and prints.
"""

from __future__ import annotations

import argparse
import json

import torch

from constcl.models.constcl import LOCAL_SOURCES, VARIANTS, build_model
from constcl.models.info import count_flops, count_parameters
from constcl.models.r3d import BACKBONES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="r3d50", choices=sorted(BACKBONES),
                        help="backbone family member (default: r3d50, the paper's network)")
    parser.add_argument("--variant", default="constcl", choices=VARIANTS,
                        help="cvrl = global loss only; region = + region loss without context; "
                             "constcl = full method")
    parser.add_argument("--local-source", default="y", choices=LOCAL_SOURCES,
                        help="what the region head reads (y = duplicated res5)")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip (default 16)")
    parser.add_argument("--size", type=int, default=224, help="crop size in pixels (default 224)")
    parser.add_argument("--context-length", type=int, default=5, help="L_c, odd (default 5)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    for flag in ("frames", "size", "context_length"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be at least 1; "
                             f"got {getattr(args, flag)}")
    with torch.device("meta"):
        model = build_model(args.model, variant=args.variant, local_source=args.local_source,
                            context_length=args.context_length)
    params = count_parameters(model)
    flops = count_flops(model, args.frames, args.size)
    report = {"model": args.model, "variant": args.variant, "local_source": args.local_source,
              "input": [3, args.frames, args.size, args.size], "parameters": params, "flops": flops}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"ConST-CL {args.variant} on {args.model} (local branch: {args.local_source}), "
          f"clip 3 x {args.frames} x {args.size} x {args.size}")
    print("parameters:")
    labels = {"backbone": "backbone (stem..res5)", "backbone_res5": "  of which res5",
              "res5_local": "res5 copy (local branch)", "global_head": "global head",
              "region_head": "region head", "total": "total"}
    for key, label in labels.items():
        print(f"  {label:<28}{params[key] / 1e6:>10.2f} M")
    print("FLOPs per clip (multiply-add = 2 FLOPs):")
    print(f"  {'backbone forward':<28}{flops['backbone_forward_gflop_per_clip']:>10.1f} GFLOP")
    print(f"  {'res5 copy forward':<28}{flops['res5_local_forward_gflop_per_clip']:>10.1f} GFLOP")
    print(f"  {'training step (fwd + bwd)':<28}{flops['train_step_gflop_per_clip']:>10.1f} GFLOP")
    return 0
