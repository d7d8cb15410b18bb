"""The low-level trackers of bench/world_audit.py --local-sets: NCC against a naive loop, and a
template that moves by a known offset is followed exactly."""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import world_audit  # noqa: E402


def test_ncc_map_equals_a_naive_loop():
    gen = torch.Generator().manual_seed(0)
    search = torch.rand(3, 9, 11, generator=gen)
    template = torch.rand(3, 4, 5, generator=gen)
    got = world_audit._ncc_map(search, template)
    t = (template - template.mean()).flatten()
    for y in range(6):
        for x in range(7):
            w = search[:, y:y + 4, x:x + 5].flatten()
            want = float((w - w.mean()) @ t / ((w - w.mean()).norm() * t.norm()))
            assert abs(got[y, x].item() - want) < 1e-4


def test_pixel_and_colour_trackers_follow_a_moving_square(tmp_path):
    frames = []
    for t in range(4):
        img = np.zeros((40, 40, 3), dtype=np.uint8)
        img[5 + 2 * t:13 + 2 * t, 6 + 3 * t:14 + 3 * t] = (200, 40, 40)
        img[8 + 2 * t:10 + 2 * t, 9 + 3 * t:11 + 3 * t] = (40, 200, 40)  # texture for NCC
        path = tmp_path / f"{t}.png"
        Image.fromarray(img).save(path)
        frames.append(path)
    box0 = np.array([7.0, 6.0, 8.0, 8.0])  # 1-based x, y, w, h
    for cue in ("pixels", "colour"):
        boxes = world_audit.track_low_level(frames, box0, cue)
        want = np.array([[7 + 3 * t, 6 + 2 * t, 8, 8] for t in range(4)], dtype=float)
        np.testing.assert_array_equal(boxes, want, err_msg=cue)
    stay = world_audit.track_low_level(frames, box0, "stay")
    assert (stay == box0).all()
