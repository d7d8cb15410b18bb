"""The PyAV decoder (the default): seeks to the key frame before each wanted stretch, decodes
forward and skips non-reference H.264 frames that no wanted frame needs; several clips of one
video in one open (:func:`decode_clips`). PyAV is imported inside the functions, so importing
this module is cheap and a missing PyAV breaks decoding only."""

from __future__ import annotations

import bisect
import io
import math
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

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

__all__ = ["DECODER", "decode", "decode_all", "decode_clips", "is_nonref_h264", "join_clips",
           "probe"]

# Clips of one video closer than this are decoded in one pass rather than with a seek each.
_JOIN_SECONDS = 0.5
# Non-reference frames are decoded only when they lie less than this many nominal frame periods
# before a wanted frame's time; the others are skipped (the selection checks the guess).
_KEEP_WINDOW_FRAMES = 1.0


def _open(path: VideoInput):
    import av

    try:
        if isinstance(path, EncodedVideo):
            return av.open(io.BytesIO(path.data))
        return av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        raise VideoError(path, f"unreadable ({type(err).__name__}: {err})") from err


def _video_stream(container, path: str | Path):
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["none"]
        raise VideoError(path, f"no video stream (streams: {', '.join(kinds)})")
    return container.streams.video[0]


def _rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise VideoError(stream.container.name, "unknown frame rate")
    return Fraction(rate)


def probe(path: VideoInput) -> VideoInfo:
    container = _open(path)
    try:
        stream = _video_stream(container, path)
        fps = _rate(stream)
        duration = 0.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        num_frames = int(stream.frames or round(duration * fps))
        if num_frames <= 0:
            raise VideoError(path, "zero frames")
        width, height = stream.codec_context.width, stream.codec_context.height
        if not width or not height:
            raise VideoError(path, "zero-size frames")
        if duration <= 0:
            duration = float(num_frames / fps)
        return VideoInfo(str(path), num_frames, float(fps), duration, width, height)
    finally:
        container.close()


def decode_all(path: VideoInput, short_side: int | None = None) -> np.ndarray:
    """Decode every frame of a video into (N, H, W, 3) uint8; for comparisons and benchmarks."""
    import av

    container = _open(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_count = 1  # as decode_frames, for a like-for-like comparison
        size, reformatter = None, _reformatter()
        out = []
        for frame in container.decode(stream):
            size = size or target_size(frame.width, frame.height, short_side)
            out.append(_rgb(reformatter, frame, size))
    except av.FFmpegError as err:
        raise VideoError(path, f"decoding failed ({err})") from err
    finally:
        container.close()
    if not out:
        raise VideoError(path, "zero frames")
    return np.stack(out)


def _reformatter():
    """One colour converter per decode pass: it keeps its swscale context between frames (a
    ``frame.to_ndarray(width=...)`` per frame builds a new one each time)."""
    from av.video.reformatter import VideoReformatter

    return VideoReformatter()


def _rgb(reformatter, frame, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 RGB of a decoded frame at ``size`` = (width, height)."""
    # threads=1: PyAV's default (0, automatic) gives every converter its own thread pool, which
    # costs ~7 ms of CPU to start per decode pass, oversubscribes the cores that the DataLoader
    # workers already fill, and must not be inherited across a fork
    return reformatter.reformat(frame, width=size[0], height=size[1], format="rgb24",
                                threads=1).to_ndarray()


def decode(path: VideoInput, indices: np.ndarray, short_side: int | None) -> np.ndarray:
    return decode_clips(path, [indices], short_side)[0]


def join_clips(clips: Sequence[np.ndarray], join_frames: int) -> list[np.ndarray]:
    """The sorted unique frame indices to decode in one forward pass each: clips whose index
    ranges overlap, or are at most ``join_frames`` frames apart, are joined into one pass (so
    overlapping frames are decoded once, and a short gap is decoded through instead of seeking
    back to a key frame), in time order."""
    spans = sorted((np.unique(c) for c in clips), key=lambda w: int(w[0]))
    passes: list[np.ndarray] = []
    for wanted in spans:
        if passes and int(wanted[0]) <= int(passes[-1][-1]) + 1 + join_frames:
            passes[-1] = np.union1d(passes[-1], wanted)
        else:
            passes.append(wanted)
    return passes


def decode_clips(path: VideoInput, clips: Sequence[np.ndarray],
                 short_side: int | None) -> list[np.ndarray]:
    """Every clip's frames from one opened container (a second open of the file would cost
    about as much as a seek). Clips that overlap or nearly touch are decoded in one pass
    (:func:`join_clips`, gap up to half a second: about what a seek costs in frames decoded
    from the previous key frame when there is one every second, as after ``data prepare``);
    the others get one seek each."""
    import av

    container = _open(path)
    try:
        stream = _video_stream(container, path)
        stream.thread_count = 1  # short decodes: threads cost more than they save
        join = int(float(_rate(stream)) * _JOIN_SECONDS)
        frames: dict[int, np.ndarray] = {}
        for n, wanted in enumerate(join_clips(clips, join)):
            decoded = _select_frames(container, stream, wanted, short_side, path, rewind=n > 0)
            frames.update(zip((int(k) for k in wanted), decoded, strict=True))
        return [np.stack([frames[int(k)] for k in indices]) for indices in clips]
    except av.FFmpegError as err:
        raise VideoError(path, f"decoding failed ({err})") from err
    finally:
        container.close()


def _select_frames(container, stream, wanted, short_side, path,
                   rewind: bool = False) -> list[np.ndarray]:
    """Seek before ``wanted[0]``, decode forward and pick one frame per (sorted) wanted index.
    A fresh container needs no seek for index 0; one that has decoded before (``rewind``)
    seeks back to the start."""
    fps, tb, start = _rate(stream), stream.time_base, stream.start_time or 0
    # a frame at time t (seconds after the first frame) is eligible for index k if t <= k/fps + tb
    thresholds = [Fraction(int(k)) / fps + tb for k in wanted]
    if wanted[0] > 0:
        seek_pts = start + math.floor(Fraction(int(wanted[0])) / fps / tb)
    else:
        seek_pts = start if rewind else None

    def attempt(skip: int | None):
        result = _decode_forward(container, stream, thresholds, short_side, seek_pts, skip=skip)
        if result is None:  # the seek landed after the first wanted frame: decode from the start
            result = _decode_forward(container, stream, thresholds, short_side, start,
                                     retry=False, skip=skip)
        return result

    try:
        out, last_time = attempt(_nonref_length_size(stream))
    except _SkippedNeeded:  # a skipped frame was the one to pick: decode every frame instead
        if seek_pts is None:  # a fresh container: go back to the first frame explicitly
            seek_pts = start
        out, last_time = attempt(None)
    if last_time is None:
        raise VideoError(path, "zero frames")
    if len(out) < len(thresholds):
        raise VideoError(path, f"truncated (no frame after {float(last_time):.2f}s)")
    return out


class _SkippedNeeded(Exception):
    """A frame that was not decoded (a skipped non-reference frame) turned out to be the one
    to pick; the caller decodes the range again without skipping."""


def _nonref_length_size(stream) -> int | None:
    """For H.264 in MP4 / Matroska framing (avcC: length-prefixed NAL units), the size in bytes
    of each NAL length field; None where non-reference frames cannot be recognised from the
    packet bytes (other codecs, Annex B streams), so every frame is decoded."""
    ctx = stream.codec_context
    extradata = ctx.extradata
    if ctx.name != "h264" or not extradata or len(extradata) < 5 or extradata[0] != 1:
        return None
    return (extradata[4] & 3) + 1


def is_nonref_h264(data: bytes, length_size: int) -> bool:
    """True when an H.264 access unit in avcC framing (``length_size``-byte big-endian NAL
    lengths) holds slices and all of them have ``nal_ref_idc`` 0: no other frame is predicted
    from it, so it can be left undecoded without changing any other frame. Malformed framing
    gives False (decode it)."""
    i, slices = 0, False
    while i + length_size < len(data):
        size = int.from_bytes(data[i : i + length_size], "big")
        header = data[i + length_size]
        if size == 0 or i + length_size + size > len(data):
            return False
        if header & 0x1F in (1, 5):  # coded slice (non-IDR / IDR)
            if header & 0x60:  # nal_ref_idc != 0
                return False
            slices = True
        i += length_size + size
    return slices and i == len(data)


def _packets(container, stream, keep, skip: int | None, skipped: list[int]):
    """Decoded frames in display order; with ``skip`` (the NAL length size), packets of
    non-reference frames whose pts fails ``keep(pts)`` are not decoded and their pts are
    appended to ``skipped``."""
    for packet in container.demux(stream):
        if (skip is not None and packet.size and packet.pts is not None
                and not keep(packet.pts) and is_nonref_h264(bytes(packet), skip)):
            skipped.append(packet.pts)
            continue
        yield from packet.decode()


def _decode_forward(container, stream, thresholds, short_side, seek_pts, retry=True,
                    skip: int | None = None):
    """Decode from ``seek_pts`` (None: from where the container is) and select frames.

    Returns (selected RGB arrays, time of the last decoded frame), or None when ``retry`` and
    the first decoded frame is already past the first threshold (an imprecise seek).

    With ``skip`` (see :func:`_nonref_length_size`), non-reference frames that are not within
    one nominal frame period before a threshold are not decoded at all (about half of the
    frames of a typical x264 stream: the lead-in after the seek and the frames a stride
    passes over). Nothing else changes: no frame is predicted from them. Should one of them
    be the frame to pick (irregular timestamps), :class:`_SkippedNeeded` is raised.
    """
    tb, start = stream.time_base, stream.start_time or 0
    period = 1 / _rate(stream)
    if seek_pts is not None:
        container.seek(int(seek_pts), stream=stream, backward=True, any_frame=False)
    out: list[np.ndarray] = []
    prev, prev_time, size = None, None, None
    reformatter = _reformatter()
    # in pts units (floats: the skip decision only needs to be right most of the time, and
    # check_skipped() below errs towards decoding again)
    limits = [float(start + t / tb) for t in thresholds]
    # a frame in (limit - window, limit] may be picked
    window = 1.0 + _KEEP_WINDOW_FRAMES * float(period / tb)
    skipped: list[int] = []

    def keep(pts: int) -> bool:
        i = bisect.bisect_left(limits, pts)
        return i < len(limits) and limits[i] - window < pts

    def check_skipped(after: Fraction | None, upto: Fraction | None) -> None:
        """The frame to pick is the last one at or before ``upto`` (None: the end); the
        candidate was decoded at ``after`` (None: nothing before it). A skipped frame between
        the two would have been the one: raise :class:`_SkippedNeeded`."""
        low = -math.inf if after is None else float(start + after / tb) - 1e-6
        high = math.inf if upto is None else float(start + upto / tb) + 1e-6
        if any(low < pts <= high for pts in skipped):
            raise _SkippedNeeded

    for frame in _packets(container, stream, keep, skip, skipped):
        if frame.pts is not None:
            time = Fraction(frame.pts - start) * tb
        else:  # no timestamp: one nominal period after the previous frame
            time = Fraction(0) if prev_time is None else prev_time + period
        if prev is None and retry and seek_pts is not None and time > thresholds[0]:
            return None
        size = size or target_size(frame.width, frame.height, short_side)
        while len(out) < len(thresholds) and time > thresholds[len(out)]:
            check_skipped(prev_time, thresholds[len(out)])
            out.append(_rgb(reformatter, prev if prev is not None else frame, size))
        if len(out) == len(thresholds):
            return out, time
        prev, prev_time = frame, time
    if prev is not None:  # stream ended: indices just past the end map to the last frame
        limit = prev_time + tb + END_SLACK_FRAMES * period
        check_skipped(prev_time, None)  # the true last frame may have been skipped
        last = _rgb(reformatter, prev, size)
        while len(out) < len(thresholds) and thresholds[len(out)] <= limit:
            out.append(last)
    return out, prev_time


DECODER = Decoder("pyav", "cpu", probe, decode, decode_clips)
