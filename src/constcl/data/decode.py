"""Video decoding behind a small decoder interface: PyAV (default) and torchcodec (optional).

A *decoder* (:class:`Decoder`, looked up by name with :func:`get_decoder`) has two operations,
``probe(video) -> VideoInfo`` and ``decode(video, indices, short_side) -> (N, H, W, 3) uint8``,
where ``video`` is a file path or an :class:`EncodedVideo` (a whole encoded file held in memory,
e.g. one member of a WebDataset shard). Both CPU backends return numpy arrays; the interface
carries a ``device`` so that a GPU backend (NVDEC through torchcodec's ``device="cuda"``) can
follow: it would return a device tensor of the same layout, and the crop step would run there.

Frame indices live on a *nominal* grid: index ``i`` means time ``i / fps`` after the first frame,
where ``fps`` is the stream's average rate. A decoded frame is selected for index ``i`` when it is
the latest frame whose presentation time is ``<= i / fps`` (plus one tick of the stream time base,
to absorb timestamp rounding in containers with coarse time bases such as mkv's milliseconds).
This makes variable-frame-rate files behave: a frame that is shown for a long time is repeated,
frames shown only briefly may be skipped, exactly as a player at ``fps`` would show them.

PyAV is imported lazily inside the backend so importing this module is cheap and a missing
backend only breaks decoding, not the whole package. Decoding is single-threaded: clips are short
and the parallelism comes from DataLoader workers.
"""

from __future__ import annotations

import bisect
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from constcl.errors import ConstclError

__all__ = ["VideoError", "VideoInfo", "EncodedVideo", "VideoInput", "Decoder", "DECODERS",
           "get_decoder", "probe", "verify", "decode_frames", "decode_clips", "decode_all"]

# Indices at most this many nominal frames past the last decoded frame map to the last frame
# (header frame counts and durations are estimates); further than that means a truncated file.
_END_SLACK_FRAMES = 2
# Clips of one video closer than this are decoded in one pass rather than with a seek each.
_JOIN_SECONDS = 0.5
# Non-reference frames are decoded only when they lie less than this many nominal frame periods
# before a wanted frame's time; the others are skipped (the selection checks the guess).
_KEEP_WINDOW_FRAMES = 1.0


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


def probe(path: VideoInput, backend: str = "pyav") -> VideoInfo:
    """Read a video's header with decoder ``backend`` (see :func:`get_decoder`).

    Raises:
        VideoError: unreadable file, no video stream (e.g. audio only), or no decodable frame.
    """
    return get_decoder(backend).probe(path)


def _probe_pyav(path: VideoInput) -> VideoInfo:
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


def verify(path: VideoInput, backend: str = "pyav") -> VideoInfo:
    """``probe`` plus decoding the first and the last frame; catches truncated files cheaply."""
    info = probe(path, backend)
    decode_frames(path, [0, info.num_frames - 1], backend=backend)
    return info


def decode_frames(
    path: VideoInput,
    frame_indices: Sequence[int] | np.ndarray,
    short_side: int | None = None,
    backend: str = "pyav",
) -> np.ndarray:
    """Decode the frames at the given nominal indices.

    Args:
        path: video file.
        frame_indices: N indices on the nominal fps grid, any order, repeats allowed.
        short_side: if given, frames are resized (during colour conversion) so that their
            shorter side has this many pixels, keeping the aspect ratio.
        backend: decoder name (:data:`DECODERS`): ``"pyav"`` or ``"torchcodec"``.

    Returns:
        uint8 array (N, H, W, 3), RGB, in the order of ``frame_indices``.

    Raises:
        VideoError: on any decoding failure, or indices past the end of a truncated file.
    """
    return get_decoder(backend).decode(path, _indices(frame_indices), short_side)


def _indices(frame_indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """``frame_indices`` as an int64 array; ValueError unless it is 1-D, non-empty and >= 0."""
    indices = np.asarray(frame_indices, dtype=np.int64)
    if indices.ndim != 1 or indices.size == 0 or indices.min() < 0:
        raise ValueError(f"frame_indices must be a non-empty 1-D list of indices >= 0: {indices}")
    return indices


def decode_clips(
    path: VideoInput,
    clips: Sequence[Sequence[int] | np.ndarray],
    short_side: int | None = None,
    backend: str = "pyav",
) -> list[np.ndarray]:
    """:func:`decode_frames` for several clips of one video, opening it once where the backend
    can (PyAV); returns one uint8 (N_i, H, W, 3) array per clip, equal to ``decode_frames`` of
    that clip. Raises :class:`VideoError` like it."""
    decoder = get_decoder(backend)
    checked = [_indices(frame_indices) for frame_indices in clips]
    if decoder.decode_clips is not None:
        return decoder.decode_clips(path, checked, short_side)
    return [decoder.decode(path, indices, short_side) for indices in checked]


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
            size = size or _target_size(frame.width, frame.height, short_side)
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


def _target_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    """(width, height) after scaling the short side to ``short_side`` (unchanged if None)."""
    if short_side is None:
        return width, height
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _decode_pyav(path: VideoInput, indices: np.ndarray, short_side: int | None) -> np.ndarray:
    return _decode_pyav_clips(path, [indices], short_side)[0]


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


def _decode_pyav_clips(path: VideoInput, clips: Sequence[np.ndarray],
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
        size = size or _target_size(frame.width, frame.height, short_side)
        while len(out) < len(thresholds) and time > thresholds[len(out)]:
            check_skipped(prev_time, thresholds[len(out)])
            out.append(_rgb(reformatter, prev if prev is not None else frame, size))
        if len(out) == len(thresholds):
            return out, time
        prev, prev_time = frame, time
    if prev is not None:  # stream ended: indices just past the end map to the last frame
        limit = prev_time + tb + _END_SLACK_FRAMES * period
        check_skipped(prev_time, None)  # the true last frame may have been skipped
        last = _rgb(reformatter, prev, size)
        while len(out) < len(thresholds) and thresholds[len(out)] <= limit:
            out.append(last)
    return out, prev_time


# ------------------------------------------------------------------------ torchcodec backend

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


def _probe_torchcodec(video: VideoInput) -> VideoInfo:
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


def _decode_torchcodec(video: VideoInput, indices: np.ndarray, short_side: int | None
                       ) -> np.ndarray:
    """Frames at nominal indices with torchcodec's ``get_frames_played_at`` (the frame shown at
    ``begin + k / fps``: the same selection rule as the PyAV path)."""
    decoder = _torchcodec_open(video)
    meta = decoder.metadata
    if short_side is not None:  # the resize is part of the decoder: open it again with it
        size = _target_size(meta.width, meta.height, short_side)
        if size != (meta.width, meta.height):
            decoder = _torchcodec_open(video, size)
    fps, begin, duration = _grid(meta)
    end = float(meta.end_stream_seconds or begin + duration)
    wanted = np.unique(indices)
    times = begin + wanted / fps + _TIME_SLACK
    late = times >= end
    if late.any():  # just past the end (estimated lengths) -> the last frame; further: truncated
        if times[late].max() > end + _END_SLACK_FRAMES / fps + _TIME_SLACK:
            raise VideoError(video, f"truncated (no frame after {end:.2f}s)")
        times[late] = end - _TIME_SLACK
    try:
        frames = decoder.get_frames_played_at(seconds=times.tolist()).data.numpy()
    except (RuntimeError, IndexError, ValueError) as err:
        raise VideoError(video, f"decoding failed ({str(err).splitlines()[0][:200]})") from err
    lookup = {int(k): i for i, k in enumerate(wanted)}
    return frames[[lookup[int(k)] for k in indices]]


# ------------------------------------------------------------------------ decoder interface


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


_DECODERS = {
    "pyav": Decoder("pyav", "cpu", _probe_pyav, _decode_pyav, _decode_pyav_clips),
    "torchcodec": Decoder("torchcodec", "cpu", _probe_torchcodec, _decode_torchcodec),
}
DECODERS: tuple[str, ...] = tuple(_DECODERS)


def get_decoder(name: str) -> Decoder:
    """The decoder called ``name`` (one of :data:`DECODERS`); ValueError for another name.
    torchcodec is an optional extra: using it without the package (or without FFmpeg's shared
    libraries) raises :class:`~constcl.errors.ConstclError` saying what to install."""
    if name not in _DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {list(DECODERS)}")
    return _DECODERS[name]
