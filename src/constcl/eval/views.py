"""Deterministic evaluation clips: temporal views, spatial crops and the network's input range.

Multi-view testing follows PySlowFast (docs/evaluation.md section 1.2):

* **Temporal.** A clip is ``frames`` frames every ``stride`` frames, spanning
  ``span = (frames - 1) * stride + 1`` raw frames. With ``L`` frames and
  ``delta = max(L - span, 0)``, view ``i`` of ``N`` starts at ``floor(delta * i / N)`` (so the
  last view never reaches the end of the video). One view (``N = 1``) is the *centre* clip,
  ``floor(delta / 2)``, as the ``use_offset`` variant does. Indices past the end are clamped to
  the last frame (a video shorter than a clip repeats its last frame).
* **Spatial.** Frames are decoded with the short side resized to ``size``; 3 crops take
  ``size x size`` squares at the start, centre and end of the long side (left / centre / right
  for landscape video); 1 crop is the centre square.
* **Range.** uint8 ``[0, 255]`` -> float ``[-1, 1]`` (``x / 127.5 - 1``), the pretraining input
  range of ``PhotometricAugment``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from constcl.data.augment import to_model_range

__all__ = [
    "ViewSpec",
    "centred_indices",
    "clamped_clip_indices",
    "spatial_crops",
    "temporal_starts",
    "to_model_input",
]


@dataclass(frozen=True)
class ViewSpec:
    """Clip settings of an evaluation: ``clips`` temporal x ``crops`` spatial views of
    ``frames`` frames at ``stride``, ``size`` pixels square."""

    frames: int = 32
    stride: int = 2
    clips: int = 10
    crops: int = 3
    size: int = 256

    def __post_init__(self) -> None:
        if min(self.frames, self.stride, self.clips, self.size) < 1:
            raise ValueError(f"view settings must be positive: {self}")
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {self.crops}")

    @property
    def span(self) -> int:
        """Raw frames covered by one clip."""
        return (self.frames - 1) * self.stride + 1

    @property
    def views(self) -> int:
        """Views per video, ``clips * crops``."""
        return self.clips * self.crops


def temporal_starts(num_frames: int, span: int, clips: int) -> np.ndarray:
    """Start frames ``(clips,)`` of the temporal views (see the module docstring)."""
    if num_frames < 1 or span < 1 or clips < 1:
        raise ValueError(f"need positive num_frames, span, clips; got {num_frames, span, clips}")
    delta = max(num_frames - span, 0)
    if clips == 1:
        return np.array([delta // 2], dtype=np.int64)
    return (delta * np.arange(clips)) // clips


def clamped_clip_indices(start: int, frames: int, stride: int, num_frames: int) -> np.ndarray:
    """Frame indices ``(frames,)``: ``start + stride * k``, clamped to ``[0, num_frames - 1]``
    (a short video repeats its last frame; pretraining's ``looped_clip_indices`` wraps instead)."""
    return np.clip(start + stride * np.arange(frames), 0, num_frames - 1).astype(np.int64)


def centred_indices(key_frame: int, frames: int, stride: int, num_frames: int) -> np.ndarray:
    """Frame indices ``(frames,)`` of a clip whose input frame ``frames // 2`` is ``key_frame``
    (the AVA convention: the key frame is the clip's centre), clamped at both ends."""
    return clamped_clip_indices(key_frame - stride * (frames // 2), frames, stride, num_frames)


def spatial_crops(frames: np.ndarray, size: int, crops: int) -> np.ndarray:
    """Square crops of frames whose short side is already ``size``.

    Args:
        frames: uint8 ``(T, H, W, 3)`` with ``min(H, W) == size``.
        crops: 1 (centre) or 3 (start, centre, end of the long side).

    Returns:
        uint8 ``(crops, T, size, size, 3)``.
    """
    _, h, w, _ = frames.shape
    if min(h, w) != size:
        raise ValueError(f"short side must be {size}; frames are {h}x{w}")
    long_len = max(h, w)
    offsets = [(long_len - size) // 2] if crops == 1 else [0, (long_len - size) // 2,
                                                           long_len - size]
    if h >= w:
        out = [frames[:, o:o + size, :size] for o in offsets]
    else:
        out = [frames[:, :size, o:o + size] for o in offsets]
    return np.stack(out)


def to_model_input(clips: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., T, H, W, 3)`` -> float ``(..., 3, T, H, W)`` in ``[-1, 1]``."""
    return to_model_range(torch.as_tensor(clips).movedim(-1, -4))
