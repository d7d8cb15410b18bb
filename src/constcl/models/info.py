"""``constcl info``: parameter counts per part and FLOPs per clip of a ConST-CL model.

FLOPs are counted with ``torch.utils.flop_counter`` (a multiply-add counts as 2 FLOPs; only
convolutions, matrix products and attention are counted, as is usual) on the ``meta`` device, so
even R3D-50 at 16 x 224^2 costs no real compute.
"""

from __future__ import annotations

import argparse
import json

import torch
from torch.utils.flop_counter import FlopCounterMode

from constcl.models.constcl import LOCAL_SOURCES, VARIANTS, ConSTCL, build_model
from constcl.models.r3d import SPECS


def count_parameters(model: ConSTCL) -> dict[str, int]:
    """Trainable parameters of each part: backbone, res5_local, global_head, region_head, total."""
    parts = {"backbone": model.backbone, "res5_local": model.res5_local,
             "global_head": model.global_head, "region_head": model.region_head}
    counts = {name: sum(p.numel() for p in m.parameters()) if m is not None else 0
              for name, m in parts.items()}
    counts["backbone_res5"] = sum(p.numel() for p in model.backbone.res5.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def _flops(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_flops(model: ConSTCL, frames: int, size: int, num_regions: int = 8) -> dict[str, float]:
    """FLOPs per clip: backbone forward, whole training step (forward + backward, both views).

    The model is moved to the meta device (its parameters are not needed for counting).
    """
    model = model.to("meta").train()
    batch = 2  # clips per view; BatchNorm needs more than one sample
    clip = torch.zeros(batch, 3, frames, size, size, device="meta")
    boxes = torch.tensor([0.1, 0.1, 0.6, 0.6], device="meta").expand(batch, num_regions, 4)

    def step() -> None:
        out = model(clip, clip.clone(), boxes, boxes.clone())
        out["loss"].backward()

    backbone_fwd = _flops(lambda: model.backbone(clip))
    local_fwd = 0
    if model.res5_local is not None:
        res4 = model.backbone.forward_trunk(clip)["res4"]
        local_fwd = _flops(lambda: model.res5_local(res4))
    train_step = _flops(step)
    clips = 2 * batch
    return {
        "backbone_forward_gflop_per_clip": backbone_fwd / batch / 1e9,
        "res5_local_forward_gflop_per_clip": local_fwd / batch / 1e9,
        "train_step_gflop_per_clip": train_step / clips / 1e9,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="r3d50", choices=sorted(SPECS),
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
