"""3-D ResNet backbones of the CVRL / ConST-CL family (docs/spec.md section 2).

Layout (R3D-50, input B x 3 x 16 x 224 x 224):

====== ===================================================== =====================
stage  layers                                                output (C x T x H x W)
====== ===================================================== =====================
stem   conv 5x7x7, 64, stride (2, 2, 2); BN; ReLU;            64 x 8 x 56 x 56
       max-pool 1x3x3 stride (1, 2, 2)
res2   3 bottlenecks, width 64, temporal kernel 1             256 x 8 x 56 x 56
res3   4 bottlenecks, width 128, temporal kernel 1, stride 2  512 x 8 x 28 x 28
res4   6 bottlenecks, width 256, temporal kernel 3, stride 2  1024 x 8 x 14 x 14
res5   3 bottlenecks, width 512, temporal kernel 3, stride 2  2048 x 8 x 7 x 7
====== ===================================================== =====================

Bottleneck: conv tk x 1 x 1 -> BN -> ReLU -> conv 1 x 3 x 3 (spatial stride) -> BN -> ReLU ->
conv 1 x 1 x 1 -> BN, plus a projection shortcut (1 x 1 x 1 conv + BN) when the shape changes,
then ReLU. No conv biases. R3D-50 has 31.67 M parameters; its res5 alone 20.21 M.

Initialisation: convolutions use He (Kaiming) normal with fan-out and ReLU gain, as torchvision's
ResNets do; BatchNorm starts at gamma 1, beta 0. ``zero_init_residual=True`` zeroes the gamma of
the last BN of every bottleneck, so each block starts as the identity (Goyal et al. 2017); it is
off by default to match the reference, and worth trying when large-batch training is unstable.

Input normalisation (``input_norm``, not in the paper): ``"none"`` feeds the [-1, 1] clip as it
is (the paper); ``"clip"`` first standardises each clip on its own, subtracting its per-channel mean
and dividing by its standard deviation over all channels and positions. That removes the clip's
brightness and contrast (and its mean colour cast), which the colour augmentation changes
independently in the two views; ``docs/method.md`` ("Input normalisation") has the measurements
that make it the demo's setting: at a few hundred CPU steps a network without it collapses.
``"unit"`` maps the [-1, 1] clip to [0, 1] (``(x + 1) / 2``), the input range of the TensorFlow
Model Garden's video models (``zero_centering_image=False``), so that weights converted from a
CVRL checkpoint (``constcl convert tf``) see what they were trained on.

Padding (``padding``): ``"torch"`` (default) pads every convolution and the stem max-pool
symmetrically (``k // 2`` each side). ``"tf_same"`` reproduces TensorFlow's ``padding='same'``
exactly: output size ``ceil(n / stride)``, total padding ``max((out - 1) * stride + k - n, 0)``
with the smaller half before and the larger half after, so a strided conv or pool on an even
size pads one cell less before than after (the stem's 7x7 / 2 conv pads 2 before and 3 after
on 224 px, where "torch" pads 3 and 3). Stride-1 convolutions with odd kernels and the 1x1
shortcuts pad the same in both modes. The weights are the same either way; only converted TF
checkpoints need ``"tf_same"``, which their export records (``constcl.convert``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

STAGE_NAMES = ("res2", "res3", "res4", "res5")
INPUT_NORMS = ("none", "clip", "unit")
PADDINGS = ("torch", "tf_same")
_CLIP_NORM_EPS = 1e-2  # a flat clip (std 0) maps to zeros, not to amplified noise


def standardize_clip(x: torch.Tensor) -> torch.Tensor:
    """Per-sample standardisation: (B, C, ...) -> same shape, each sample minus its per-channel
    mean over the remaining dims, divided by its standard deviation over (C, ...) plus 0.01.

    Works for clips (B, C, T, H, W) and frames (B, C, H, W) alike; a still clip and its frame
    get the same statistics.
    """
    x = x - x.mean(dim=tuple(range(2, x.dim())), keepdim=True)
    std = x.flatten(1).std(dim=1).view(-1, *([1] * (x.dim() - 1)))
    return x / (std + _CLIP_NORM_EPS)


@dataclass(frozen=True)
class R3DSpec:
    """Architecture of one family member.

    depths: bottlenecks per stage (res2..res5); widths: bottleneck widths (outputs are 4x);
    temporal_kernels: temporal size of each stage's first conv; stem_width: stem channels.
    """

    depths: tuple[int, int, int, int] = (3, 4, 6, 3)
    widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    temporal_kernels: tuple[int, int, int, int] = (1, 1, 3, 3)
    stem_width: int = 64
    expansion: int = 4

    @property
    def out_channels(self) -> tuple[int, int, int, int]:
        return tuple(w * self.expansion for w in self.widths)  # type: ignore[return-value]


# Plain dict of family members (STYLE: no registry). r3d_50 is the paper's network; the others
# keep the layout and shrink depth and width for CPU runs and tests.
BACKBONES: dict[str, R3DSpec] = {
    "r3d50": R3DSpec(),
    "r3d26": R3DSpec(depths=(2, 2, 2, 2)),
    "r3d_small": R3DSpec(depths=(1, 1, 1, 1), widths=(16, 32, 64, 128), stem_width=16),
    "r3d_tiny": R3DSpec(depths=(1, 1, 1, 1), widths=(4, 8, 8, 16), stem_width=8),
    # The TF Model Garden fixture's network (bench/make_tf_fixture.py): the Model Garden's v0 stem
    # always has 64 channels; two blocks per stage exercise identity shortcuts.
    "r3d_tf_tiny": R3DSpec(depths=(2, 2, 2, 2), widths=(8, 16, 32, 64), stem_width=64),
}


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow ``padding='same'`` along one dim: (before, after), the smaller half first."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _tf_same_pad(x: torch.Tensor, kernel: tuple[int, ...], stride: tuple[int, ...],
                 value: float = 0.0) -> torch.Tensor:
    """Pad (B, C, T, H, W) as TF 'same' would for this kernel and stride."""
    pads: list[int] = []
    for size, k, s in reversed(list(zip(x.shape[2:], kernel, stride, strict=True))):
        pads.extend(_same_pads(int(size), k, s))
    return F.pad(x, pads, value=value) if any(pads) else x


class TFSameConv3d(nn.Conv3d):
    """``nn.Conv3d`` with TensorFlow's ``padding='same'`` for odd kernels: (B, C_in, T, H, W) ->
    (B, C_out, ceil(T / s_t), ceil(H / s_h), ceil(W / s_w)); same parameters and state-dict keys
    as ``nn.Conv3d``.

    At stride 1, 'same' is the symmetric padding ``k // 2`` (times the dilation) held in
    ``self.padding``, so code that later removes the stride and dilates the conv (the frame
    encoder of ``eval``) keeps working by setting ``stride``, ``dilation`` and ``padding`` as
    for a plain ``nn.Conv3d``. With any stride above 1 the input is padded as TF does instead
    (the smaller half before) and ``self.padding`` is not used.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int],
                 stride: tuple[int, int, int], bias: bool = False) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride=stride,
                         padding=tuple(k // 2 for k in kernel_size), bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if all(s == 1 for s in self.stride):
            return super().forward(x)
        kernel = tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation,
                                                       strict=True))
        x = _tf_same_pad(x, kernel, self.stride)
        return F.conv3d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class TFSameMaxPool3d(nn.MaxPool3d):
    """``nn.MaxPool3d`` with TensorFlow's ``padding='same'`` (padded cells never win the max)."""

    def __init__(self, kernel_size: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__(kernel_size, stride=stride, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(_tf_same_pad(x, self.kernel_size, self.stride, float("-inf")))


def normalize_input(x: torch.Tensor, input_norm: str) -> torch.Tensor:
    """(B, 3, ...) [-1, 1] input -> what the stem of a network with ``input_norm`` reads (one of
    ``INPUT_NORMS``, module docstring)."""
    if input_norm == "unit":
        return (x + 1.0) * 0.5
    return standardize_clip(x) if input_norm == "clip" else x


class Bottleneck(nn.Module):
    """Bottleneck block: (B, C_in, T, H, W) -> (B, 4 * width, T, H / stride, W / stride)."""

    def __init__(
        self, in_channels: int, width: int, out_channels: int, stride: int, temporal_kernel: int,
        padding: str = "torch",
    ) -> None:
        super().__init__()
        tk = temporal_kernel
        self.conv1 = nn.Conv3d(in_channels, width, (tk, 1, 1), padding=(tk // 2, 0, 0), bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        if padding == "tf_same":
            self.conv2: nn.Conv3d = TFSameConv3d(width, width, (1, 3, 3),
                                                 stride=(1, stride, stride), bias=False)
        else:
            self.conv2 = nn.Conv3d(
                width, width, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False
            )
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + self.shortcut(x))


def make_stage(
    in_channels: int, width: int, out_channels: int, depth: int, stride: int, temporal_kernel: int,
    padding: str = "torch",
) -> nn.Sequential:
    """A stage of ``depth`` bottlenecks; the first one carries the spatial stride."""
    blocks = [Bottleneck(in_channels, width, out_channels, stride, temporal_kernel, padding)]
    for _ in range(depth - 1):
        blocks.append(Bottleneck(out_channels, width, out_channels, 1, temporal_kernel, padding))
    return nn.Sequential(*blocks)


def make_res5(spec: R3DSpec, padding: str = "torch") -> nn.Sequential:
    """A fresh res5 stage of ``spec`` (used for the Y-shaped duplicate)."""
    c4 = spec.out_channels[2]
    return make_stage(c4, spec.widths[3], spec.out_channels[3], spec.depths[3], 2,
                      spec.temporal_kernels[3], padding)


class R3D(nn.Module):
    """3-D ResNet backbone.

    ``forward_features(x)`` returns the unpooled endpoints ``res2`` .. ``res5``;
    ``forward(x)`` returns the globally average-pooled res5 embedding (B, C5).
    Input x: (B, 3, T, H, W), values in [-1, 1]. ``padding`` is one of ``PADDINGS`` and
    ``input_norm`` one of ``INPUT_NORMS`` (module docstring).
    """

    def __init__(self, spec: R3DSpec, zero_init_residual: bool = False,
                 input_norm: str = "none", padding: str = "torch") -> None:
        super().__init__()
        if input_norm not in INPUT_NORMS:
            raise ValueError(f"input_norm {input_norm!r} is unknown; allowed: {list(INPUT_NORMS)}")
        if padding not in PADDINGS:
            raise ValueError(f"padding {padding!r} is unknown; allowed: {list(PADDINGS)}")
        self.spec = spec
        self.input_norm = input_norm
        self.padding = padding
        if padding == "tf_same":
            stem_conv: nn.Conv3d = TFSameConv3d(3, spec.stem_width, (5, 7, 7), stride=(2, 2, 2),
                                                bias=False)
            pool: nn.MaxPool3d = TFSameMaxPool3d((1, 3, 3), stride=(1, 2, 2))
        else:
            stem_conv = nn.Conv3d(3, spec.stem_width, (5, 7, 7), stride=(2, 2, 2),
                                  padding=(2, 3, 3), bias=False)
            pool = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.stem = nn.Sequential(stem_conv, nn.BatchNorm3d(spec.stem_width),
                                  nn.ReLU(inplace=True), pool)
        in_channels = spec.stem_width
        for i, name in enumerate(STAGE_NAMES):
            stride = 1 if i == 0 else 2
            stage = make_stage(in_channels, spec.widths[i], spec.out_channels[i], spec.depths[i],
                               stride, spec.temporal_kernels[i], padding)
            self.add_module(name, stage)
            in_channels = spec.out_channels[i]
        init_weights(self, zero_init_residual)

    @property
    def out_channels(self) -> int:
        return self.spec.out_channels[3]

    def normalize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The input normalisation (``input_norm``) every path into the stem applies first."""
        return normalize_input(x, self.input_norm)

    def forward_trunk(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Stem to res4: endpoints ``res2``, ``res3``, ``res4``."""
        feats = {}
        x = self.stem(self.normalize_input(x))
        for name in STAGE_NAMES[:3]:
            x = getattr(self, name)(x)
            feats[name] = x
        return feats

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Endpoints res2..res5, each (B, C_i, T', H_i, W_i)."""
        feats = self.forward_trunk(x)
        feats["res5"] = self.res5(feats["res4"])
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled res5 embedding (B, C5)."""
        return self.forward_features(x)["res5"].mean(dim=(2, 3, 4))


def init_weights(module: nn.Module, zero_init_residual: bool = False) -> None:
    """He (fan-out) init for convs, unit gamma / zero beta for BN; see module docstring."""
    for m in module.modules():
        if isinstance(m, nn.Conv3d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm3d | nn.BatchNorm1d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in module.modules():
            if isinstance(m, Bottleneck):
                nn.init.zeros_(m.bn3.weight)


def build_backbone(name: str = "r3d50", zero_init_residual: bool = False,
                   input_norm: str = "none", padding: str = "torch") -> R3D:
    """Build a family member by name: one of ``BACKBONES`` (r3d50, r3d26, r3d_small, r3d_tiny,
    r3d_tf_tiny); ``input_norm`` is one of ``INPUT_NORMS``, ``padding`` one of ``PADDINGS``
    (module docstring)."""
    if name not in BACKBONES:
        raise ValueError(f"backbone name {name!r} is unknown; allowed: {sorted(BACKBONES)}")
    return R3D(BACKBONES[name], zero_init_residual=zero_init_residual, input_norm=input_norm,
               padding=padding)


def r3d_50(zero_init_residual: bool = False) -> R3D:
    """The paper's R3D-50 (31.67 M parameters)."""
    return build_backbone("r3d50", zero_init_residual)


def duplicate_res5(backbone: R3D, zero_init_residual: bool = False) -> nn.Sequential:
    """A second, independently initialised res5 with the backbone's architecture (and
    padding)."""
    res5 = make_res5(backbone.spec, backbone.padding)
    init_weights(res5, zero_init_residual)
    return res5
