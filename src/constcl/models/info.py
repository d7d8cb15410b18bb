"""Parameter counts per part and FLOPs per clip of a ConST-CL model (``constcl info``).

FLOPs are counted with ``torch.utils.flop_counter`` (a multiply-add counts as 2 FLOPs; only
convolutions, matrix products and attention are counted, as is usual) on the ``meta`` device, so
even R3D-50 at 16 x 224^2 costs no real compute.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from constcl.models.constcl import ConSTCL


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
