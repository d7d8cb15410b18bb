"""``constcl eval track`` at its joints: OTB scores of sequences whose answer is known.

The frame encoder is replaced by raw pixels averaged over 8 x 8 cells (stride 8, like the dilated
network), and the OTB-layout sequences are written by the test: a textured, non-square target
moves at a constant, different velocity in each sequence over a plain landscape frame, and
``groundtruth_rect.txt`` holds its true 1-based ``x, y, w, h``. SiamFC on raw pixels follows such
a target to within a pixel, so every predicted box (``boxes/<seq>.txt``) must lie within a pixel
of the constructed trajectory and keep the target's size, and the reported per-sequence and
averaged precision@20px, success AUC and success rate must equal a naive recomputation from the
constructed trajectory. A tracker started from the wrong frame's box, a box with x and y (or w
and h) exchanged, or one sequence scored against another's ground truth fails these.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from constcl.eval import track
from constcl.eval.track import task as track_task

WIDTH, HEIGHT, FRAMES = 160, 96, 12
TARGET_W, TARGET_H = 24, 16
# name: (first 1-based top-left x, y; velocity in pixels per frame)
SEQUENCES = {"Alpha": (20, 30, 5, 3), "Beta": (120, 60, -4, -2)}


class PooledPixels:
    """Stand-in for ``FrameEncoder``: ``(N, 3, H, W)`` -> ``(N, 3, H / 8, W / 8)`` cell means."""

    stride = 8

    def __init__(self, net, stage, frame_mode, clip_len) -> None:
        pass

    def to(self, device) -> PooledPixels:
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, 8, ceil_mode=True)


def _trajectory(name: str) -> np.ndarray:
    """``(FRAMES, 4)`` true OTB boxes of a sequence: 1-based top-left x, y and w, h."""
    x0, y0, vx, vy = SEQUENCES[name]
    t = np.arange(FRAMES)
    return np.stack([x0 + vx * t, y0 + vy * t, np.full(FRAMES, TARGET_W),
                     np.full(FRAMES, TARGET_H)], axis=1).astype(float)


def _otb_world(root: Path) -> None:
    texture = np.random.default_rng(0).integers(60, 256, (TARGET_H // 4, TARGET_W // 4, 3))
    target = np.repeat(np.repeat(texture, 4, axis=0), 4, axis=1).astype(np.uint8)
    for name in SEQUENCES:
        (root / name / "img").mkdir(parents=True)
        boxes = _trajectory(name)
        for f, (x, y, w, h) in enumerate(boxes.astype(int)):
            frame = np.full((HEIGHT, WIDTH, 3), 30, np.uint8)
            frame[y - 1:y - 1 + h, x - 1:x - 1 + w] = target
            Image.fromarray(frame).save(root / name / "img" / f"{f + 1:04d}.jpg", quality=95)
        np.savetxt(root / name / "groundtruth_rect.txt", boxes, fmt="%d", delimiter=",")


def _naive_ope(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float, float]:
    """(precision@20px, success AUC over 21 thresholds, success rate at IoU > 0.5)."""
    errors, ious = [], []
    for (px, py, pw, ph), (gx, gy, gw, gh) in zip(pred, gt, strict=True):
        errors.append(math.hypot(px + pw / 2 - gx - gw / 2, py + ph / 2 - gy - gh / 2))
        iw = max(0.0, min(px + pw, gx + gw) - max(px, gx))
        ih = max(0.0, min(py + ph, gy + gh) - max(py, gy))
        ious.append(iw * ih / (pw * ph + gw * gh - iw * ih))
    success = [sum(o > i / 20 for o in ious) / len(gt) for i in range(21)]
    return sum(e <= 20 for e in errors) / len(gt), sum(success) / 21, success[10]


def test_siamfc_follows_known_trajectories(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(track_task, "FrameEncoder", PooledPixels)
    _otb_world(tmp_path / "otb")
    result = track.run(track.Settings(checkpoint="random", backbone="r3d_tiny",
                                      data=tmp_path / "otb", out=tmp_path / "out", device="cpu"))
    assert sorted(result["per_sequence"]) == sorted(SEQUENCES)
    scores = {}
    for name in SEQUENCES:
        gt = _trajectory(name)
        pred = np.loadtxt(tmp_path / "out" / "boxes" / f"{name}.txt", delimiter=",")
        assert pred.shape == gt.shape
        centre_error = np.hypot(*(pred[:, :2] + pred[:, 2:] / 2 - gt[:, :2] - gt[:, 2:] / 2).T)
        assert centre_error.max() < 1.0, f"{name}: centre errors {centre_error.round(2)}"
        np.testing.assert_allclose(pred[:, 2:], gt[:, 2:], rtol=0.05, err_msg=name)
        scores[name] = _naive_ope(pred, gt)
        reported = result["per_sequence"][name]
        assert reported["frames"] == FRAMES
        for i, key in enumerate(("precision_20", "success_auc", "success_rate")):
            assert reported[key] == pytest.approx(scores[name][i], abs=1e-9), f"{name} {key}"
        assert reported["precision_20"] == 1.0 and reported["success_rate"] == 1.0
    for i, key in enumerate(("precision_20", "success_auc", "success_rate")):
        mean = sum(s[i] for s in scores.values()) / len(scores)
        assert result["metrics"][key] == pytest.approx(mean, abs=1e-9), key
