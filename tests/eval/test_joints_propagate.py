"""``constcl eval propagate`` at its joints: J and F of a sequence whose answer is known.

The frame encoder is replaced by raw pixels averaged over 8 x 8 cells (stride 8, like the dilated
network), and a DAVIS-layout sequence is written by the test: on a plain grey landscape frame a
red and a blue bar, each two cells wide and the full frame high, move one cell per frame towards
each other. Every cell is background, object 1 or object 2 by its colour alone, so propagating
frame 0's masks must give, in every frame, exactly the cells where each bar is (bars on cell
boundaries and spanning the frame's height leave bilinear upsampling nothing to round). The
annotation of object 1 in frame 3 is deliberately one cell off, so the scores are not all 1:
the written masks must equal the bars' true positions, and every reported J and F (per object,
per sequence, the DAVIS means) must equal a naive recomputation from those positions and the
annotation files. A mask propagated from the wrong frame, a query frame that lags, or a frame
read with its axes exchanged fails this.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from constcl.data.palette import write_palette_masks
from constcl.eval import propagate
from constcl.eval.propagate import task as propagate_task
from tests.eval.test_outputs_recompute import _naive_f

WIDTH, HEIGHT, CELL, FRAMES = 128, 64, 8, 6
SEQ = "bars"
COLOURS = {0: (220, 220, 220), 1: (220, 30, 30), 2: (30, 30, 220)}
WRONG_FRAME, WRONG_SHIFT = 3, 1  # object 1's annotation of frame 3 is one cell to the right


class PooledPixels:
    """Stand-in for ``FrameEncoder``: ``(N, 3, H, W)`` -> ``(N, 3, H / 8, W / 8)`` cell means."""

    def __init__(self, net, stage, frame_mode, clip_len) -> None:
        pass

    def to(self, device) -> PooledPixels:
        return self

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(images, CELL)


def _bar_ids(t: int, shift_object_1: int = 0) -> np.ndarray:
    """``(HEIGHT, WIDTH)`` object ids of frame ``t``: bar 1 at cells 1-2 moving right, bar 2 at
    cells 13-14 moving left, one cell per frame."""
    ids = np.zeros((HEIGHT, WIDTH), np.uint8)
    for obj, first_cell in ((1, 1 + t + shift_object_1), (2, 13 - t)):
        ids[:, first_cell * CELL:(first_cell + 2) * CELL] = obj
    return ids


def _davis_world(root: Path) -> None:
    frames = root / "JPEGImages" / "480p" / SEQ
    frames.mkdir(parents=True)
    annotations = []
    for t in range(FRAMES):
        ids = _bar_ids(t)
        rgb = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        for obj, colour in COLOURS.items():
            rgb[ids == obj] = colour
        Image.fromarray(rgb).save(frames / f"{t:05d}.jpg", quality=100, subsampling=0)
        annotations.append(_bar_ids(t, WRONG_SHIFT if t == WRONG_FRAME else 0))
    write_palette_masks(root / "Annotations" / "480p" / SEQ, np.stack(annotations))
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text(f"{SEQ}\n")


def test_propagation_of_known_bars(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(propagate_task, "FrameEncoder", PooledPixels)
    _davis_world(tmp_path / "davis")
    out = tmp_path / "out"
    result = propagate.run(propagate.Settings(
        checkpoint="random", backbone="r3d_tiny", data=tmp_path / "davis", out=out,
        device="cpu", overlay_sequences=0))
    # the masks: the bars where they are (frame 0 is the given annotation)
    written = sorted((out / "masks" / SEQ).glob("*.png"))
    assert [p.name for p in written] == [f"{t:05d}.png" for t in range(FRAMES)]
    for t, path in enumerate(written):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), _bar_ids(t),
                                      err_msg=f"frame {t}")
    # J and F of each object over frames 1 .. T-2 (DAVIS drops the first and the last)
    gt = [np.asarray(Image.open(p)) for p in
          sorted((tmp_path / "davis" / "Annotations" / "480p" / SEQ).glob("*.png"))]
    j_obj, f_obj = {}, {}
    for obj in (1, 2):
        js, fs = [], []
        for t in range(1, FRAMES - 1):
            g, p = gt[t] == obj, _bar_ids(t) == obj
            js.append((g & p).sum() / (g | p).sum())
            fs.append(_naive_f(g, p))
        j_obj[obj], f_obj[obj] = float(np.mean(js)), float(np.mean(fs))
    assert j_obj[1] == pytest.approx((3 + 1 / 3) / 4)  # frame 3: 1 of 3 cell columns shared
    assert j_obj[2] == 1.0 and f_obj[2] == 1.0 and f_obj[1] < 1.0
    for obj in (1, 2):
        reported = result["per_object"][f"{SEQ}_{obj}"]
        assert reported["J-Mean"] == pytest.approx(j_obj[obj], abs=1e-9), f"J of object {obj}"
        assert reported["F-Mean"] == pytest.approx(f_obj[obj], abs=1e-9), f"F of object {obj}"
    j_mean, f_mean = np.mean(list(j_obj.values())), np.mean(list(f_obj.values()))
    assert result["per_sequence"][SEQ]["J-Mean"] == pytest.approx(j_mean, abs=1e-9)
    m = result["metrics"]
    assert m["J-Mean"] == pytest.approx(j_mean, abs=1e-9)
    assert m["F-Mean"] == pytest.approx(f_mean, abs=1e-9)
    assert m["J&F-Mean"] == pytest.approx((j_mean + f_mean) / 2, abs=1e-9)
