"""The torchcodec decoder (optional extra ``constcl[torchcodec]``): frames at nominal indices
with ``get_frames_played_at`` (the same selection rule as the PyAV decoder), resized while
decoding."""

from __future__ import annotations

import numpy as np

from constcl.data.decode.base import (
    END_SLACK_FRAMES,
    Decoder,
    EncodedVideo,
    VideoError,
    VideoInfo,
    VideoInput,
    target_size,
)
from constcl.errors import ConstclError

__all__ = ["DECODER", "decode", "probe"]

# Presentation times are compared with this slack (seconds), like the PyAV path's one tick of
# the stream time base (mkv's millisecond), to absorb timestamp rounding.
_TIME_SLACK = 1e-3
# "exact" scans the packet index when a file is opened (no decoding); "approximate" trusts the
# header and seeks wrongly in variable-frame-rate files (a frame 0.1 s off in tests).
_TORCHCODEC_SEEK_MODE = "exact"


def _torchcodec_open(video: VideoInput, size: tuple[int, int] | None = None):
    """A torchcodec ``VideoDecoder`` (NHWC, exact seeking, one FFmpeg thread), resizing
    to ``size`` = (width, height) while decoding when given."""
    try:
        from torchcodec.decoders import VideoDecoder
        from torchcodec.transforms import Resize
    except (ImportError, OSError, RuntimeError) as err:  # no package, or no FFmpeg libraries
        raise ConstclError(
            "data.decoder=torchcodec needs the torchcodec package and FFmpeg's shared libraries "
            "(pip install 'constcl[torchcodec]'; apt-get install ffmpeg); or use "
            f"data.decoder=pyav ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
        ) from err
    source = video.data if isinstance(video, EncodedVideo) else str(video)
    transforms = None if size is None else [Resize((size[1], size[0]))]
    try:
        return VideoDecoder(source, dimension_order="NHWC", seek_mode=_TORCHCODEC_SEEK_MODE,
                            num_ffmpeg_threads=1, transforms=transforms)
    except (RuntimeError, ValueError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "video stream" in reason.lower():
            raise VideoError(video, f"no video stream ({reason})") from err
        raise VideoError(video, f"unreadable ({type(err).__name__}: {reason})") from err


def _grid(meta) -> tuple[float, float, float]:
    """(fps, first time, duration) of the nominal grid from the header, as the PyAV path reads
    them (the exact-mode content values differ for variable-frame-rate files)."""
    fps = meta.average_fps_from_header or meta.average_fps
    begin = meta.begin_stream_seconds_from_header
    begin = meta.begin_stream_seconds if begin is None else begin
    duration = meta.duration_seconds_from_header or meta.duration_seconds
    return float(fps or 0.0), float(begin or 0.0), float(duration or 0.0)


def probe(video: VideoInput) -> VideoInfo:
    meta = _torchcodec_open(video).metadata
    fps, _, duration = _grid(meta)
    if fps <= 0:
        raise VideoError(video, "unknown frame rate")
    num_frames = int(meta.num_frames_from_header or round(duration * fps))
    if num_frames <= 0:
        raise VideoError(video, "zero frames")
    if not meta.width or not meta.height:
        raise VideoError(video, "zero-size frames")
    return VideoInfo(str(video), num_frames, float(fps), duration or num_frames / fps,
                     int(meta.width), int(meta.height))


def decode(video: VideoInput, indices: np.ndarray, short_side: int | None
                       ) -> np.ndarray:
    """Frames at nominal indices with torchcodec's ``get_frames_played_at`` (the frame shown at
    ``begin + k / fps``: the same selection rule as the PyAV path)."""
    decoder = _torchcodec_open(video)
    meta = decoder.metadata
    if short_side is not None:  # the resize is part of the decoder: open it again with it
        size = target_size(meta.width, meta.height, short_side)
        if size != (meta.width, meta.height):
            decoder = _torchcodec_open(video, size)
    fps, begin, duration = _grid(meta)
    end = float(meta.end_stream_seconds or begin + duration)
    wanted = np.unique(indices)
    times = begin + wanted / fps + _TIME_SLACK
    late = times >= end
    if late.any():  # just past the end (estimated lengths) -> the last frame; further: truncated
        if times[late].max() > end + END_SLACK_FRAMES / fps + _TIME_SLACK:
            raise VideoError(video, f"truncated (no frame after {end:.2f}s)")
        times[late] = end - _TIME_SLACK
    try:
        frames = decoder.get_frames_played_at(seconds=times.tolist()).data.numpy()
    except (RuntimeError, IndexError, ValueError) as err:
        raise VideoError(video, f"decoding failed ({str(err).splitlines()[0][:200]})") from err
    lookup = {int(k): i for i, k in enumerate(wanted)}
    return frames[[lookup[int(k)] for k in indices]]


DECODER = Decoder("torchcodec", "cpu", probe, decode)
