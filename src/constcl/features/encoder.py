"""``constcl.load_encoder``: a frozen video encoder that knows its own input convention.

::

    import constcl
    enc = constcl.load_encoder("runs/demo/backbone.safetensors", branch="local")
    with torch.no_grad():
        vectors = enc.embed(frames)     # uint8 (B, T, H, W, 3) from a decoder -> (B, C)
        maps = enc.features(frames)     # -> res5 map (B, C, T', H', W')

**Input convention.** Every constcl network reads clips ``(B, 3, T, H, W)`` in ``[-1, 1]``
(``x / 127.5 - 1`` of 8-bit RGB). A network may then normalise that clip further before its
stem (``input_norm`` in the file: ``none``, ``clip`` standardises each clip, ``unit`` maps it
back to ``[0, 1]`` for weights converted from TensorFlow) and may pad as TensorFlow does
(``padding``: ``torch`` or ``tf_same``). Both are read from the checkpoint's metadata
(``constcl.backbone_file``, through ``eval.encoder.load_backbone``) and applied inside the
encoder, so a caller only ever passes

* uint8 frames ``(B, T, H, W, 3)`` (RGB, as PyAV / torchcodec / ``decode_frames`` return
  them): converted here, or
* float clips ``(B, 3, T, H, W)`` in ``[-1, 1]``: values outside ``[-1, 1]`` (e.g. 0..255
  floats) raise ``ValueError``; a float batch entirely within ``[0, 1]`` logs a warning once
  (the usual mistake: a [0, 1] clip gives res5 features ~0.8 off, silently).

The checkpoint is a ``backbone.safetensors`` of ``constcl pretrain`` (or its export), a file of
``constcl convert tf`` (TF Model Garden CVRL weights), or ``"random"`` for the random-init
baseline (then ``backbone`` names the family member and ``seed`` draws the weights).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from constcl.eval.encoder import (
    BRANCHES,
    RANDOM_CHECKPOINT,
    load_backbone,
    weights_digest,
)
from constcl.models.r3d import R3D

__all__ = ["Encoder", "load_encoder", "as_model_input"]

log = logging.getLogger(__name__)

_RANGE_SLACK = 1e-3  # float clips may exceed [-1, 1] by rounding only


def as_model_input(clips: torch.Tensor | np.ndarray) -> torch.Tensor:
    """uint8 frames ``(B, T, H, W, 3)`` -> float32 ``(B, 3, T, H, W)`` in ``[-1, 1]``
    (``x / 127.5 - 1``); float clips ``(B, 3, T, H, W)`` are checked and passed through.

    Raises ValueError for another shape or dtype, and for float values outside ``[-1, 1]``.
    """
    x = torch.as_tensor(clips)
    if x.dtype == torch.uint8:
        if x.ndim != 5 or x.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be (B, T, H, W, 3) RGB; got shape "
                             f"{tuple(x.shape)}")
        return x.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0
    if not x.is_floating_point():
        raise ValueError(f"clips must be uint8 frames (B, T, H, W, 3) or float clips "
                         f"(B, 3, T, H, W) in [-1, 1]; got dtype {x.dtype}")
    if x.ndim != 5 or x.shape[1] != 3:
        raise ValueError(f"float clips must be (B, 3, T, H, W) in [-1, 1]; got shape "
                         f"{tuple(x.shape)} (uint8 frames are (B, T, H, W, 3))")
    low, high = float(x.min()), float(x.max())
    if not (low >= -1 - _RANGE_SLACK and high <= 1 + _RANGE_SLACK):
        raise ValueError(f"float clips must lie in [-1, 1] (x / 127.5 - 1 of 8-bit RGB); got "
                         f"values in [{low:.3g}, {high:.3g}]; pass uint8 frames to have them "
                         "converted")
    return x


class Encoder(nn.Module):
    """A frozen backbone with its input convention (see the module docstring).

    Attributes:
        net: the ``R3D`` (its res5 is the chosen branch's copy).
        branch: ``global`` or ``local``.
        checkpoint: the file it was read from, or ``"random"``.
        input_norm, padding: the network's input normalisation and convolution padding, as
            recorded in the file.
    """

    def __init__(self, net: R3D, branch: str, checkpoint: str) -> None:
        super().__init__()
        self.net = net
        self.branch = branch
        self.checkpoint = checkpoint
        self._warned_unit_range = False

    @property
    def input_norm(self) -> str:
        return self.net.input_norm

    @property
    def padding(self) -> str:
        return self.net.padding

    @property
    def out_channels(self) -> int:
        """C of ``embed`` and ``features``."""
        return self.net.out_channels

    @property
    def input_convention(self) -> dict[str, Any]:
        """What the encoder expects and does, as a dict (for records and ``print``)."""
        return {"uint8": "(B, T, H, W, 3) RGB, converted by x / 127.5 - 1",
                "float": "(B, 3, T, H, W) in [-1, 1]", "input_norm": self.input_norm,
                "padding": self.padding, "branch": self.branch}

    def prepare(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Caller's clips -> float ``(B, 3, T, H, W)`` in ``[-1, 1]`` on the encoder's device."""
        is_uint8 = torch.as_tensor(clips).dtype == torch.uint8
        x = as_model_input(clips)
        if not is_uint8 and not self._warned_unit_range and float(x.min()) >= 0.0:
            self._warned_unit_range = True
            log.warning("float clips all lie in [0, 1]: the encoder expects [-1, 1] "
                        "(x / 127.5 - 1 of 8-bit RGB); pass uint8 frames to have them converted")
        param = next(self.net.parameters())
        return x.to(device=param.device, dtype=param.dtype if param.is_floating_point()
                    else torch.float32)

    def features(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """res5 map of the chosen branch: ``(B, C, T', H', W')``; for R3D-50 on 16 x 224^2
        clips ``(B, 2048, 8, 7, 7)``."""
        return self.net.forward_features(self.prepare(clips))["res5"]

    def embed(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Globally average-pooled res5: ``(B, C)`` (the vector the evaluations use)."""
        return self.features(clips).mean(dim=(2, 3, 4))

    def forward(self, clips: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Same as :meth:`embed`."""
        return self.embed(clips)

    def extra_repr(self) -> str:
        return (f"checkpoint={self.checkpoint!r}, branch={self.branch!r}, "
                f"input_norm={self.input_norm!r}, padding={self.padding!r}")


def load_encoder(checkpoint: str | Path = RANDOM_CHECKPOINT, branch: str = "global",
                 backbone: str | None = None, *, input_norm: str | None = None, seed: int = 0,
                 device: str | torch.device = "cpu") -> Encoder:
    """A frozen encoder in eval mode.

    Args:
        checkpoint: ``backbone.safetensors`` (a constcl export or a ``constcl convert tf``
            file), or ``"random"`` for random weights.
        branch: ``global`` (res5 copy 1) or ``local`` (copy 2, the region branch's).
        backbone: family member (``r3d50``, ``r3d_small``, ...); read from the file when None,
            required for ``"random"``.
        input_norm: only for ``"random"`` (default ``"none"``); a checkpoint's own is used, and
            a different value given here is refused.
        seed: seed of the random weights (the same seed gives the same network).
        device: where the network lives.

    Raises FileNotFoundError, ValueError or ``ConstclError`` naming the file for a missing,
    unreadable or unfitting checkpoint.
    """
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {list(BRANCHES)}; got {branch!r}")
    if str(checkpoint) == RANDOM_CHECKPOINT:
        if backbone is None:
            raise ValueError("checkpoint 'random' needs a backbone name (backbone= or "
                             "--backbone, e.g. r3d50)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = load_backbone(None, branch, backbone, input_norm=input_norm)
    else:
        net = load_backbone(Path(checkpoint), branch, backbone, input_norm=input_norm)
    return Encoder(net, branch, str(checkpoint)).to(device).eval()


def checkpoint_identity(checkpoint: str | Path, backbone: str | None, seed: int,
                        input_norm: str | None) -> dict[str, Any]:
    """What determines the weights: the file's tensor digest, or the random-init recipe."""
    if str(checkpoint) == RANDOM_CHECKPOINT:
        return {"random": backbone, "seed": seed, "input_norm": input_norm or "none"}
    return {"path": str(Path(checkpoint).resolve()),
            "weights_sha256": weights_digest(checkpoint)}
