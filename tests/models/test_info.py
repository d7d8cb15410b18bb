import json

import pytest
import torch

from constcl.cli import main
from constcl.models import build_backbone


def analytic_conv_flops(name: str, frames: int, size: int) -> int:
    """2 * C_in * k_t * k_h * k_w * C_out per output voxel, summed over every convolution."""
    total = 0

    def hook(module, _inputs, output):
        nonlocal total
        total += 2 * module.weight[0].numel() * output.numel()

    with torch.device("meta"):
        net = build_backbone(name)
        for m in net.modules():
            if isinstance(m, torch.nn.Conv3d):
                m.register_forward_hook(hook)
        net(torch.empty(1, 3, frames, size, size))
    return total


def test_info_json_counts_parameters_and_flops(capsys):
    assert main(["info", "--model", "r3d50", "--frames", "16", "--size", "224", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    params, flops = report["parameters"], report["flops"]
    assert abs(params["backbone"] - 31.67e6) <= 0.01e6
    assert abs(params["res5_local"] - 20.21e6) <= 0.01e6
    assert params["total"] == sum(params[k] for k in ("backbone", "res5_local", "global_head",
                                                      "region_head"))
    expected = analytic_conv_flops("r3d50", 16, 224) / 1e9
    assert flops["backbone_forward_gflop_per_clip"] == pytest.approx(expected, rel=1e-3)
    # a training step costs about 3x the forward (backward = 2x), plus the heads
    ratio = flops["train_step_gflop_per_clip"] / (
        flops["backbone_forward_gflop_per_clip"] + flops["res5_local_forward_gflop_per_clip"])
    assert 2.8 < ratio < 3.2


def test_info_text_output(capsys):
    assert main(["info", "--model", "r3d_tiny", "--frames", "16", "--size", "64"]) == 0
    text = capsys.readouterr().out
    assert "backbone" in text and "GFLOP" in text and "region head" in text
