"""``R3D(padding="tf_same")``: TensorFlow's 'same' padding, same parameters as the default."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from constcl.models import build_backbone, build_model
from constcl.models.r3d import TFSameConv3d, TFSameMaxPool3d


@pytest.mark.parametrize("size", [6, 7, 8, 9])
def test_tf_same_conv_matches_explicit_padding(size: int) -> None:
    torch.manual_seed(0)
    conv = TFSameConv3d(2, 3, (1, 3, 3), stride=(1, 2, 2), bias=False)
    x = torch.randn(1, 2, 2, size, size)
    total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
    expected = F.conv3d(F.pad(x, (total // 2, total - total // 2) * 2), conv.weight,
                        stride=(1, 2, 2))
    assert conv(x).shape[-1] == -(-size // 2)
    torch.testing.assert_close(conv(x), expected)


def test_tf_same_pool_ignores_padding() -> None:
    x = -torch.ones(1, 1, 1, 4, 4)  # all negative: a zero pad would win the max
    out = TFSameMaxPool3d((1, 3, 3), stride=(1, 2, 2))(x)
    assert out.shape[-2:] == (2, 2) and (out == -1).all()


def test_odd_sizes_pad_the_same_in_both_modes() -> None:
    torch.manual_seed(0)
    a = build_backbone("r3d_tiny").eval()
    b = build_backbone("r3d_tiny", padding="tf_same").eval()
    b.load_state_dict(a.state_dict())
    assert a.state_dict().keys() == b.state_dict().keys()
    x = torch.randn(1, 3, 3, 33, 33)  # 33 -> 17 -> 9 -> 5 -> 3: every strided op sees odd sizes
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_padding_reaches_the_local_res5_copy() -> None:
    model = build_model("r3d_tiny", padding="tf_same", context_length=1)
    assert isinstance(model.res5_local[0].conv2, TFSameConv3d)
    with pytest.raises(ValueError, match="padding"):
        build_backbone("r3d_tiny", padding="same")


def test_unit_input_norm_maps_to_zero_one() -> None:
    net = build_backbone("r3d_tiny", input_norm="unit")
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1, 1)
    assert net.normalize_input(x).flatten().tolist() == [0.0, 0.5, 1.0]


def test_frame_encoder_keeps_its_output_size_with_tf_same() -> None:
    """The frame encoder removes res4 / res5 strides and dilates: 'same' at stride 1."""
    from constcl.eval.frame_encoder import FrameEncoder

    torch.manual_seed(0)
    a = build_backbone("r3d_tiny").eval()
    b = build_backbone("r3d_tiny", padding="tf_same").eval()
    b.load_state_dict(a.state_dict())
    images = torch.randn(1, 3, 33, 33)
    for stage in ("res4", "res5"):
        for mode in ("static", "repeat"):
            out_a = FrameEncoder(a, stage, mode, clip_len=4)(images)
            out_b = FrameEncoder(b, stage, mode, clip_len=4)(images)
            assert out_a.shape == out_b.shape == (1, a.spec.out_channels[
                2 if stage == "res4" else 3], 5, 5)
    # odd sizes and T = 1 (static): both paddings agree exactly
    torch.testing.assert_close(FrameEncoder(a, "res4")(images), FrameEncoder(b, "res4")(images))
