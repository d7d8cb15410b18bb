"""Temporal sampling of two clips per video: CVRL's gap sampler (docs/spec.md section 1).

A clip is ``frames`` frames taken every ``stride`` frames, so it spans ``(frames - 1) * stride
+ 1`` raw frames. With ``L`` frames in the video there are ``M = L - (frames - 1) * stride``
positions for a clip's start (M = L - 30 for 16 x 2). The gap ``d`` between the two starts is
drawn on [0, M] with the linearly decreasing density ``f(d) = 2 (M - d) / M^2``; the first start
``s1`` is uniform on [0, M - d], the second is ``s1 + d``, and the two are swapped with
probability 0.5. Draws are continuous and the starts are floored to integers (a start equal to
M has probability zero, so every clip fits). Videos shorter than one clip are looped: the video
is treated as its frames repeated until a clip fits, and indices are taken modulo ``L``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["ClipSpec", "sample_gap", "sample_starts", "looped_clip_indices", "sample_two_clips"]


@dataclass(frozen=True)
class ClipSpec:
    """``frames`` frames at temporal ``stride``; defaults are 16 x 2 (docs/spec.md section 1)."""

    frames: int = 16
    stride: int = 2

    def __post_init__(self) -> None:
        if self.frames < 1 or self.stride < 1:
            raise ValueError(f"clip needs frames >= 1 and stride >= 1, got {self}")

    @property
    def span(self) -> int:
        """Raw frames covered by one clip (31 for 16 x 2)."""
        return (self.frames - 1) * self.stride + 1

    @property
    def key_frame(self) -> int:
        """Position inside the clip of the key (middle input) frame, where regions live."""
        return self.frames // 2


def sample_gap(max_gap: float, rng: np.random.Generator) -> float:
    """Draw d on [0, max_gap] with density 2 (M - d) / M^2 (inverse CDF: d = M (1 - sqrt(u)))."""
    if max_gap <= 0:
        return 0.0
    return float(max_gap * (1.0 - math.sqrt(rng.random())))


def _looped_length(num_frames: int, clip: ClipSpec) -> int:
    """Length of the video after repeating it until one clip fits (the video itself if it does)."""
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    return num_frames * math.ceil(clip.span / num_frames)


def sample_starts(num_frames: int, clip: ClipSpec, rng: np.random.Generator) -> tuple[int, int]:
    """Start frames (s_a, s_b) of the two clips, on the (possibly looped) video."""
    max_start = _looped_length(num_frames, clip) - (clip.frames - 1) * clip.stride  # M
    gap = sample_gap(max_start, rng)
    first = rng.random() * (max_start - gap)
    starts = (math.floor(first), math.floor(first + gap))
    if rng.random() < 0.5:
        starts = (starts[1], starts[0])
    return starts


def looped_clip_indices(start: int, num_frames: int, clip: ClipSpec) -> np.ndarray:
    """Frame indices (clip.frames,) of the clip starting at ``start``, looped modulo the length
    (pretraining; the evaluation views clamp instead: ``eval.views.clamped_clip_indices``)."""
    return (start + clip.stride * np.arange(clip.frames)) % num_frames


def sample_two_clips(
    num_frames: int, clip: ClipSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices of view a and view b, each of shape (clip.frames,)."""
    start_a, start_b = sample_starts(num_frames, clip, rng)
    return (looped_clip_indices(start_a, num_frames, clip),
            looped_clip_indices(start_b, num_frames, clip))
