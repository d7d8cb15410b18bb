"""What every decoding backend shares: the error, the video description, in-memory videos, the
backend record (:class:`Decoder`) and the index and size rules of the nominal frame grid
(``constcl.data.decode``'s docstring)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from constcl.errors import ConstclError

__all__ = ["END_SLACK_FRAMES", "Decoder", "EncodedVideo", "VideoError", "VideoInfo", "VideoInput",
           "check_indices", "target_size"]

# Indices at most this many nominal frames past the last decoded frame map to the last frame
# (header frame counts and durations are estimates); further than that means a truncated file.
END_SLACK_FRAMES = 2


class VideoError(ConstclError):
    """A video cannot be used: unreadable, no video stream, no frames, or truncated."""

    def __init__(self, path: str | Path, reason: str | None = None) -> None:
        if reason is None:  # one argument: the whole message (as PyTorch re-raises it)
            super().__init__(str(path))
            self.path, self.reason = "", str(path)
            return
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class VideoInfo:
    """What a sampler needs to know about a video.

    ``num_frames`` is an estimate on the nominal ``fps`` grid (header frame count when the
    container has one, else ``duration * fps``).
    """

    path: str
    num_frames: int
    fps: float
    duration: float
    width: int
    height: int


@dataclass(frozen=True)
class EncodedVideo:
    """A whole encoded video file in memory; ``name`` (e.g. ``shard.tar:key``) names it in
    errors."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


VideoInput = str | Path | EncodedVideo


@dataclass(frozen=True)
class Decoder:
    """A decoding backend.

    Attributes:
        name: what ``data.decoder`` selects it by.
        device: where decoded frames live ("cpu" for both current backends; a GPU decoder
            would return device tensors shaped like the numpy arrays below).
        probe: ``probe(video) -> VideoInfo``.
        decode: ``decode(video, indices, short_side) -> uint8 (N, H, W, 3)`` RGB frames at the
            nominal indices (N,), in their order; raises :class:`VideoError`.
        decode_clips: optional ``decode_clips(video, [indices, ...], short_side)``, the same
            for several clips of one video from one open of it; None: ``decode`` per clip.
    """

    name: str
    device: str
    probe: Callable[[VideoInput], VideoInfo]
    decode: Callable[[VideoInput, np.ndarray, int | None], np.ndarray]
    decode_clips: Callable[[VideoInput, Sequence[np.ndarray], int | None],
                           list[np.ndarray]] | None = None


def check_indices(frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """``frame_indices`` as an int64 array; ValueError unless it is 1-D, non-empty and >= 0."""
    indices = np.asarray(frame_indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0 or indices.min() < 0:
        raise ValueError(f"frame_indices must be a non-empty 1-D list of indices >= 0: {indices}")
    return indices


def target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after scaling the short side to ``short_side`` (unchanged if None)."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))
