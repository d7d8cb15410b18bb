"""Helpers to write and read the tiny test videos of tests/data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from constcl.data.encode import write_video

LEVEL_FRAMES = 48
VFR_TIMES_MS = [0, 40, 80, 200, 240, 400, 440, 480]


def level_of(index: int) -> int:
    """Grey level written into frame ``index`` of the level videos."""
    return 10 + 5 * index


def index_of(frames: np.ndarray) -> np.ndarray:
    """Recover the frame index from the mean grey level of decoded frames (N, H, W, 3)."""
    return np.round((frames.reshape(len(frames), -1).mean(axis=1) - 10) / 5).astype(int)


def grey_frames(levels: list[int], height: int = 64, width: int = 64) -> np.ndarray:
    return np.broadcast_to(
        np.asarray(levels, np.uint8)[:, None, None, None], (len(levels), height, width, 3)
    ).copy()


def make_videos(root: Path) -> dict[str, Path]:
    """Good, short, still, variable-frame-rate and broken videos in one folder."""
    out: dict[str, Path] = {}
    levels = [level_of(i) for i in range(LEVEL_FRAMES)]
    out["levels"] = write_video(root / "levels.mp4", grey_frames(levels), fps=25, gop_size=8)
    out["levels_wide"] = write_video(
        root / "levels_wide.mkv", grey_frames(levels, 64, 96), fps=25, gop_size=8
    )
    vfr_levels = [level_of(i) for i in range(len(VFR_TIMES_MS))]
    out["vfr"] = write_video(
        root / "vfr.mkv", grey_frames(vfr_levels), fps=25, times_ms=VFR_TIMES_MS
    )
    texture = np.random.default_rng(0).integers(0, 256, (1, 64, 64, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(texture[:, ::8, ::8], 8, axis=1), 8, axis=2)  # 8x8 blocks
    out["still"] = write_video(root / "still.mp4", np.repeat(texture, 40, axis=0), fps=25)
    out["short"] = write_video(root / "short.mp4", grey_frames(levels[:10]), fps=25)
    good = out["levels"].read_bytes()
    out["corrupt"] = root / "corrupt.mp4"
    out["corrupt"].write_bytes(np.random.default_rng(1).bytes(4000))
    out["truncated"] = root / "truncated.mp4"
    out["truncated"].write_bytes(good[: len(good) // 2])
    mkv = write_video(root / "long.mkv", grey_frames(levels * 2), fps=25, gop_size=8)
    out["truncated_mkv"] = root / "truncated.mkv"
    out["truncated_mkv"].write_bytes(mkv.read_bytes()[: mkv.stat().st_size // 2])
    mkv.unlink()
    out["audio"] = _write_audio_only(root / "audio.mp4")
    return out


def _write_audio_only(path: Path) -> Path:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path
