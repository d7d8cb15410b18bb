"""Binary outputs of one video: the H.264 mp4 and JPEG frames (DAVIS palette PNG masks are
``constcl.data.palette.write_palette_masks``).

Everything here is deterministic for identical inputs: x264 runs single-threaded with a fixed
preset and CRF, and the container carries no creation time, so the same frames give the same
bytes with the same PyAV/FFmpeg build.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from constcl.data.encode import write_video

CRF = 20
PRESET = "veryfast"
JPEG_QUALITY = 90


def write_mp4(path: Path, frames: np.ndarray, fps: int, gop_seconds: float = 2.0) -> None:
    """Encode ``(T, H, W, 3)`` uint8 RGB frames as H.264 (yuv420p) in an mp4 container.

    A key frame every ``gop_seconds`` (like typical web video), so seek-based decoding of long
    synthetic videos behaves as it does on real data.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, frames, fps=fps, gop_size=max(1, int(round(gop_seconds * fps))),
                codec="libx264", options={"crf": str(CRF), "preset": PRESET, "threads": "1"})


def write_jpegs(folder: Path, frames: np.ndarray, pattern: str, first: int) -> list[Path]:
    """Write frames as ``folder / (pattern % (first + t))`` JPEGs; return the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for t, rgb in enumerate(frames):
        path = folder / (pattern % (first + t))
        Image.fromarray(rgb).save(path, quality=JPEG_QUALITY)
        paths.append(path)
    return paths


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
