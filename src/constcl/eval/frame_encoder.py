"""``FrameEncoder``: per-frame feature maps at output stride 8 from a frozen 3-D ResNet.

Tracking (SiamFC crops) and label propagation (DAVIS frames) need a dense feature map of one
image, but the R3D family takes clips ``(B, 3, T, H, W)``. Two ways for a single frame to enter
the network, chosen with ``frame_mode``:

* ``static`` (default): the frame is read as a **static clip of unbounded length**. For an input
  that is constant in time, every interior time step of every layer is constant too, a temporal
  convolution then equals a 2-D convolution with its kernel summed over time, and BatchNorm (eval
  mode) is a per-channel affine map. So each ``Conv3d`` with temporal kernel ``kt`` is replaced
  by one with kernel 1 holding ``weight.sum(dim=2)``, and the frame is fed as ``T = 1``. This is
  exact (tested against the middle slice of a long repeated clip), free of temporal zero-padding
  effects at any depth, and costs one frame instead of ``T``.
* ``repeat``: the frame is repeated ``clip_len`` times (default 16) and the middle time slice of
  the stage output is taken. Near the clip ends the temporal zero padding of the stem
  (kernel 5, stride 2) and of res4 / res5 (kernel 3) leaks in; with ``clip_len >= 16`` the
  middle slice of ``r3d_tiny`` / ``r3d_small`` equals ``static``; deeper networks (R3D-50 has
  six res4 and three res5 blocks) need longer clips for that.

**Stage and stride.** The encoder returns one stage (``res2`` .. ``res5``). R3D's strides are
4 / 8 / 16 / 32 for res2 / res3 / res4 / res5. SiamFC (``total_stride = 8``) and the CRW / VFS
propagation protocol (stride-8 maps) want stride 8, so, as VFS does with ``strides (1, 2, 1, 1)``
and ``dilations (1, 1, 2, 4)``, the spatial stride of res4 (and res5) is removed and the later 3x3
convolutions are dilated (torchvision's ``replace_stride_with_dilation`` rule: the first block of
a dilated stage keeps the previous dilation, the others use the new one). The weights are
unchanged; only strides, dilations and padding are. res2 stays at its native stride 4, res3 is
natively at 8. Feature cell ``i`` is centred on input pixel ``stride * i`` for every stage.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from constcl.models.r3d import R3D, STAGE_NAMES, normalize_input

FRAME_MODES = ("static", "repeat")
ENCODER_STAGES = STAGE_NAMES  # res2, res3, res4, res5
NATIVE_STRIDES = {"res2": 4, "res3": 8, "res4": 16, "res5": 32}
TARGET_STRIDE = 8


class FrameEncoder(nn.Module):
    """Frozen image -> feature-map encoder built from an ``R3D``.

    ``forward(images)``: ``(N, 3, H, W)`` float in [-1, 1] ->
    ``(N, C, ceil(H / stride), ceil(W / stride))`` with ``C`` the stage's channel count.

    Attributes:
        stage: endpoint name (``res2`` .. ``res5``).
        stride: output stride in pixels (4 for res2, 8 otherwise).
        frame_mode: ``static`` or ``repeat`` (see module docstring).
        clip_len: frames of the repeated clip (``repeat`` mode only).
    """

    def __init__(self, net: R3D, stage: str = "res4", frame_mode: str = "static",
                 clip_len: int = 16) -> None:
        super().__init__()
        if stage not in ENCODER_STAGES:
            raise ValueError(f"stage must be one of {list(ENCODER_STAGES)}; got {stage!r}")
        if frame_mode not in FRAME_MODES:
            raise ValueError(f"frame_mode must be one of {list(FRAME_MODES)}; got {frame_mode!r}")
        if clip_len < 1:
            raise ValueError(f"clip_len must be >= 1; got {clip_len}")
        self.stage, self.frame_mode, self.clip_len = stage, frame_mode, clip_len
        last = ENCODER_STAGES.index(stage)
        net = copy.deepcopy(net).eval()
        self.input_norm = net.input_norm
        self.stem = net.stem
        self.stages = nn.ModuleList(getattr(net, n) for n in ENCODER_STAGES[: last + 1])
        self.stride = stage_stride(stage)
        dilation = 1
        for name, stage_module in zip(ENCODER_STAGES, self.stages, strict=False):
            if NATIVE_STRIDES[name] > TARGET_STRIDE:
                dilation = dilate_stage(stage_module, dilation)
        if frame_mode == "static":
            collapse_time(self)
        self.requires_grad_(False)

    @property
    def out_channels(self) -> int:
        """Channels of the returned map."""
        return self.stages[-1][-1].conv3.out_channels

    def train(self, mode: bool = True) -> FrameEncoder:
        """Always eval: the encoder is frozen and BatchNorm uses its running statistics."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (N, 3, H, W) images; got shape {tuple(images.shape)}")
        t = 1 if self.frame_mode == "static" else self.clip_len
        x = images.unsqueeze(2).expand(-1, -1, t, -1, -1)
        x = self.stem(normalize_input(x, self.input_norm))
        for stage_module in self.stages:
            x = stage_module(x)
        return x[:, :, x.shape[2] // 2]


def stage_stride(stage: str) -> int:
    """Output stride of a ``FrameEncoder`` on ``stage``: 4 for res2, 8 for res3..res5."""
    return min(NATIVE_STRIDES[stage], TARGET_STRIDE)


def dilate_stage(stage: nn.Sequential, dilation: int) -> int:
    """Remove the spatial stride of a stage and dilate its 3x3 convs; in place.

    ``dilation`` is the dilation reached before this stage; returns the one after it (x2).
    The first block keeps ``dilation`` (it used to carry the stride), later blocks use the new
    one, as torchvision's ``replace_stride_with_dilation``.
    """
    new = dilation * 2
    for i, block in enumerate(stage):
        d = dilation if i == 0 else new
        block.conv2.stride = (1, 1, 1)
        block.conv2.dilation = (1, d, d)
        block.conv2.padding = (0, d, d)
        if isinstance(block.shortcut, nn.Sequential):
            block.shortcut[0].stride = (1, 1, 1)
    return new


def collapse_time(module: nn.Module) -> None:
    """Turn every ``Conv3d`` into its static-input equivalent (kernel summed over time); in place.

    Temporal strides stay: on a ``T = 1`` input a kernel-1 conv with any stride gives ``T = 1``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv3d) and m.kernel_size[0] > 1:
            m.weight = nn.Parameter(m.weight.detach().sum(dim=2, keepdim=True),
                                    requires_grad=False)
            m.kernel_size = (1, *m.kernel_size[1:])
            m.padding = (0, *m.padding[1:])


@contextlib.contextmanager
def cpu_threads(num: int) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(num)`` (``num <= 0``: unchanged), then restore."""
    before = torch.get_num_threads()
    if num > 0:
        torch.set_num_threads(num)
    try:
        yield
    finally:
        torch.set_num_threads(before)
