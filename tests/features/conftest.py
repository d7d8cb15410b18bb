"""Tiny videos for the feature tests: a constant- and a variable-frame-rate video whose frames
all differ (random 8x8-pixel blocks), in class sub-folders, and a corrupt file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from constcl.data.encode import write_video

# presentation times (ms) of the variable-frame-rate video: bursts and gaps
VFR_TIMES_MS = [0, 40, 80, 200, 240, 400, 440, 480, 600, 640, 680, 760, 900, 1000, 1040, 1200,
                1240, 1280, 1500, 1540, 1600, 1800, 1840, 1880, 2000]


def block_frames(count: int, seed: int, height: int = 64, width: int = 96) -> np.ndarray:
    """uint8 (count, height, width, 3): random colours in 8x8 blocks (survive x264)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (count, height // 8, width // 8, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)


@pytest.fixture(scope="session")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``SRC/cfr/steady.mp4`` (25 fps, 40 frames), ``SRC/vfr/bursts.mp4`` (times above)."""
    root = tmp_path_factory.mktemp("extract-src")
    (root / "cfr").mkdir()
    (root / "vfr").mkdir()
    write_video(root / "cfr" / "steady.mp4", block_frames(40, 1), fps=25, gop_size=8)
    write_video(root / "vfr" / "bursts.mp4", block_frames(len(VFR_TIMES_MS), 2), fps=25,
                times_ms=VFR_TIMES_MS)
    return root
