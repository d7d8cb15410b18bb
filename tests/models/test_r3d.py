import math

import pytest
import torch

from constcl.models import BACKBONES, build_backbone, build_model, r3d_50
from constcl.models.r3d import Bottleneck


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_r3d50_parameter_count_matches_spec():
    with torch.device("meta"):
        net = r3d_50()
    assert abs(n_params(net) - 31.67e6) <= 0.01e6
    assert abs(n_params(net.res5) - 20.21e6) <= 0.01e6


def test_y_shape_adds_one_res5():
    with torch.device("meta"):
        cvrl = build_model("r3d50", variant="cvrl")
        y = build_model("r3d50", variant="constcl", local_source="y")
        shared = build_model("r3d50", variant="constcl", local_source="shared")
    assert abs(n_params(y.res5_local) - 20.21e6) <= 0.01e6
    assert n_params(y) - n_params(shared) == n_params(y.res5_local)
    assert n_params(cvrl.backbone) == n_params(y.backbone)


def test_r3d50_endpoint_shapes():
    with torch.device("meta"):
        net = r3d_50()
        feats = net.forward_features(torch.empty(2, 3, 16, 224, 224))
    expected = {"res2": (256, 8, 56, 56), "res3": (512, 8, 28, 28),
                "res4": (1024, 8, 14, 14), "res5": (2048, 8, 7, 7)}
    assert {k: tuple(v.shape[1:]) for k, v in feats.items()} == expected


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_family_members_share_the_layout(name):
    with torch.device("meta"):
        net = build_backbone(name)
        feats = net.forward_features(torch.empty(1, 3, 16, 64, 64))
        pooled = net(torch.empty(1, 3, 16, 64, 64))
    spec = BACKBONES[name]
    for i, stage in enumerate(("res2", "res3", "res4", "res5")):
        side = 16 // 2 ** i
        assert tuple(feats[stage].shape) == (1, spec.out_channels[i], 8, side, side)
        assert len(getattr(net, stage)) == spec.depths[i]
    assert tuple(pooled.shape) == (1, spec.out_channels[3])


def test_real_forward_pools_res5():
    torch.manual_seed(0)
    net = build_backbone("r3d_tiny").eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.allclose(net(x), net.forward_features(x)["res5"].mean(dim=(2, 3, 4)))


def test_temporal_kernels_and_no_biases():
    with torch.device("meta"):
        net = r3d_50()
    assert net.stem[0].kernel_size == (5, 7, 7) and net.stem[0].stride == (2, 2, 2)
    for stage, tk in zip(("res2", "res3", "res4", "res5"), (1, 1, 3, 3), strict=True):
        for block in getattr(net, stage):
            assert block.conv1.kernel_size == (tk, 1, 1)
            assert block.conv2.kernel_size == (1, 3, 3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    assert convs and all(m.bias is None for m in convs)


def test_initialisation_is_he_fan_out():
    torch.manual_seed(0)
    net = build_backbone("r3d_small")
    conv = net.res4[0].conv2  # 64 -> 64, 1x3x3: fan_out = 64 * 9
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    bn = net.res4[0].bn3
    assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)


def test_zero_init_residual_makes_blocks_identity_at_start():
    torch.manual_seed(0)
    net = build_backbone("r3d_tiny", zero_init_residual=True)
    blocks = [m for m in net.modules() if isinstance(m, Bottleneck)]
    assert blocks and all(torch.all(b.bn3.weight == 0) for b in blocks)
    # a block with an identity shortcut computes ReLU(x) = x for non-negative x at start
    torch.manual_seed(0)
    same = Bottleneck(32, 8, 32, 1, 3)
    same.bn3.weight.data.zero_()
    x = torch.rand(1, 32, 4, 5, 5)
    assert torch.equal(same.eval()(x), x)


def test_unknown_backbone_names_the_allowed_values():
    with pytest.raises(ValueError, match="r3d50"):
        build_backbone("resnet9000")


def _naive_standardize(x):
    """Per-sample loop: minus the per-channel mean, divided by (std over everything + 0.01)."""
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        centred = torch.stack([x[i, c] - x[i, c].mean() for c in range(x.shape[1])])
        values = centred.flatten().double()
        std = math.sqrt(sum((v - values.mean()) ** 2 for v in values) / (len(values) - 1))
        out[i] = centred / (std + 0.01)
    return out


@pytest.mark.parametrize("shape", [(3, 3, 2, 4, 5), (2, 3, 6, 7)])
def test_standardize_clip_matches_a_naive_loop(shape):
    from constcl.models.r3d import standardize_clip

    x = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(standardize_clip(x), _naive_standardize(x), rtol=1e-5, atol=1e-6)
    flat = torch.full(shape, 0.3)
    assert torch.equal(standardize_clip(flat), torch.zeros(shape))  # no amplified noise


def test_input_norm_clip_makes_the_network_blind_to_brightness_and_contrast():
    """With input_norm=clip, a clip scaled by a > 0 and shifted per channel (what brightness
    and contrast jitter do, before clipping) gives the same features up to the 0.01 added to
    the standard deviation (~0.23 here, so a few percent); without it, it does not."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 4, 32, 32, generator=gen) * 0.8 - 0.4
    moved = 1.7 * x + torch.tensor([0.2, -0.1, 0.3]).view(1, 3, 1, 1, 1)
    change = {}
    for norm in ("clip", "none"):
        torch.manual_seed(0)
        net = build_backbone("r3d_tiny", input_norm=norm).eval()
        with torch.no_grad():
            a, b = net(x), net(moved)
        change[norm] = float((a - b).norm() / a.norm())
    assert change["clip"] < 0.05 and change["none"] > 0.3, change
    with pytest.raises(ValueError, match="allowed"):
        build_backbone("r3d_tiny", input_norm="batch")
