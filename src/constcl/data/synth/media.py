"""Binary outputs of one video: the H.264 mp4, JPEG frames and DAVIS palette PNG masks.

Everything here is deterministic for identical inputs: x264 runs single-threaded with a fixed
preset and CRF, and the container carries no creation time, so the same frames give the same
bytes with the same PyAV/FFmpeg build.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import numpy as np
from PIL import Image

CRF = 20
PRESET = "veryfast"
JPEG_QUALITY = 90


def write_mp4(path: Path, frames: np.ndarray, fps: int, gop_seconds: float = 2.0) -> None:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames as H.264 (yuv420p) in an mp4 container.

    A key frame every ``gop_seconds`` (like typical web video), so seek-based decoding of long
    synthetic videos behaves as it does on real data.
    """
    _, height, width, _ = frames.shape
    path.parent.mkdir(parents=True, exist_ok=True)
    options = {"crf": str(CRF), "preset": PRESET, "threads": "1"}
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.gop_size = max(1, int(round(gop_seconds * fps)))
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS (and PASCAL VOC) annotation PNGs, flat RGB triples.

    Id 0 is black, 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0), 4 (0, 0, 128), ...
    """
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.extend((r, g, b))
    return palette


def write_jpegs(folder: Path, frames: np.ndarray, pattern: str, first: int) -> list[Path]:
    """Write frames as ``folder / (pattern % (first + t))`` JPEGs; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, rgb in enumerate(frames):
        path = folder / (pattern % (first + t))
        Image.fromarray(rgb).save(path, quality=JPEG_QUALITY)
        paths.append(path)
    return paths


def write_masks(folder: Path, labels: np.ndarray) -> None:
    """Write ``(T, H, W)`` uint8 instance ids as DAVIS palette PNGs ``%05d.png`` from 0."""
    folder.mkdir(parents=True, exist_ok=True)
    palette = davis_palette()
    for t, label in enumerate(labels):
        image = Image.fromarray(label, mode="P")
        image.putpalette(palette)
        image.save(folder / f"{t:05d}.png")


def link_files(sources: list[Path], folder: Path, pattern: str, first: int) -> None:
    """Hard-link ``sources`` into ``folder`` as ``pattern % (first + i)`` (copy if links fail).

    OTB sequences of the same video share the DAVIS JPEG frames this way, without extra disk.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for i, source in enumerate(sources):
        target = folder / (pattern % (first + i))
        try:
            os.link(source, target)
        except OSError:
            shutil.copyfile(source, target)
