"""Write videos with PyAV: the synthetic world's mp4 files, test and benchmark videos.

The one video writer of the project (``constcl.data.synth.media.write_mp4`` calls it with fixed,
deterministic x264 options). Not used when training.
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

__all__ = ["write_video"]

_CODECS = {".mp4": "libx264", ".mkv": "libx264", ".avi": "mpeg4", ".webm": "libvpx-vp9"}


def write_video(
    path: str | Path,
    frames: np.ndarray,
    fps: int = 25,
    gop_size: int | None = None,
    times_ms: Sequence[int] | None = None,
    codec: str | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """Encode frames into a video file.

    Args:
        path: output file; the extension picks the container (and the default codec).
        frames: uint8 (N, H, W, 3) RGB; H and W must be even for yuv420p.
        fps: nominal frame rate.
        gop_size: frames between key frames (None: the codec default, 250 for x264).
        times_ms: optional presentation times in milliseconds, strictly increasing (one per
            frame), to write a variable-frame-rate file; None writes frame i at i / fps.
        codec: override the codec chosen from the extension.
        options: encoder options, e.g. ``{"crf": "20", "preset": "veryfast", "threads": "1"}``.

    Returns ``path``. The parent folder must exist.
    """
    import av

    path = Path(path)
    frames = np.asarray(frames, dtype=np.uint8)
    n, height, width, _ = frames.shape
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec or _CODECS.get(path.suffix, "libx264"), rate=fps,
                                      options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop_size is not None:
            stream.codec_context.gop_size = gop_size
        time_base = Fraction(1, 1000) if times_ms is not None else Fraction(1, fps)
        stream.codec_context.time_base = time_base
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(frames[i], format="rgb24")
            frame.pts = int(times_ms[i]) if times_ms is not None else i
            frame.time_base = time_base
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
