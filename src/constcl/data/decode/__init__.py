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

One module per backend: ``pyav`` (default) and ``torchcodec``; ``base`` holds what they share.
Each backend imports its library inside its functions, so importing this package is cheap and a
missing backend only breaks decoding, not the whole package. Decoding is single-threaded: clips
are short and the parallelism comes from DataLoader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from constcl.data.decode import pyav, torchcodec
from constcl.data.decode.base import (
    Decoder,
    EncodedVideo,
    VideoError,
    VideoInfo,
    VideoInput,
    check_indices,
)

__all__ = ["VideoError", "VideoInfo", "EncodedVideo", "VideoInput", "Decoder", "DECODERS",
           "get_decoder", "probe", "verify", "decode_frames", "decode_clips", "decode_all"]

_DECODERS = {d.name: d for d in (pyav.DECODER, torchcodec.DECODER)}
DECODERS: tuple[str, ...] = tuple(_DECODERS)


def get_decoder(name: str) -> Decoder:
    """The decoder called ``name`` (one of :data:`DECODERS`); ValueError for another name.
    torchcodec is an optional extra: using it without the package (or without FFmpeg's shared
    libraries) raises :class:`~constcl.errors.ConstclError` saying what to install."""
    if name not in _DECODERS:
        raise ValueError(f"unknown decoder {name!r}; choose one of {list(DECODERS)}")
    return _DECODERS[name]


def probe(path: VideoInput, backend: str = "pyav") -> VideoInfo:
    """Read a video's header with decoder ``backend`` (see :func:`get_decoder`).

    Raises:
        VideoError: unreadable file, no video stream (e.g. audio only), or no decodable frame.
    """
    return get_decoder(backend).probe(path)


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
    return get_decoder(backend).decode(path, check_indices(frame_indices), short_side)


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
    checked = [check_indices(frame_indices) for frame_indices in clips]
    if decoder.decode_clips is not None:
        return decoder.decode_clips(path, checked, short_side)
    return [decoder.decode(path, indices, short_side) for indices in checked]


def decode_all(path: VideoInput, short_side: int | None = None) -> np.ndarray:
    """Decode every frame of a video into (N, H, W, 3) uint8 with PyAV; for comparisons and
    benchmarks."""
    return pyav.decode_all(path, short_side)
