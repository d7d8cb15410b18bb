"""``constcl eval detect``: RoI features, AVA grouping, key-frame clips and CLI runs."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl.cli import main
from constcl.data.decode import decode_frames
from constcl.eval.detect import data as ava
from constcl.eval.detect import task as detect
from constcl.eval.detect.roi import boxes_to_rois, detection_roi_features
from tests.eval.eval_world import make_world

SMALL = ["--checkpoint", "random", "--backbone", "r3d_tiny", "--frames", "4", "--stride", "2",
         "--size", "64", "--workers", "0"]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory)


def test_roi_feature_of_a_box_on_a_ramp_map():
    """Channel 0 = x + 10 t (t = 0, 1; its temporal mean is x + 5), channel 1 = y."""
    t = torch.arange(2.0).view(2, 1, 1)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    res5 = torch.stack([xs + 10 * t, ys.expand(2, 8, 8)]).unsqueeze(0)  # (1, 2, 2, 8, 8)
    rois = torch.tensor([[0.0, 8.0, 12.0, 20.0, 24.0]])  # input pixels, map scale 1/4
    feat = detection_roi_features(res5, rois, output_size=7, spatial_scale=0.25, aligned=True)
    # aligned: x spans 8/4 - 0.5 = 1.5 .. 20/4 - 0.5 = 4.5 (3 cells, 7 bins of 3/7, one sample
    # per bin at its centre); the max over bins is the last bin's centre 1.5 + 6.5 * 3/7.
    # y spans 12/4 - 0.5 = 2.5 .. 5.5, last centre 2.5 + 6.5 * 3/7. Bilinear is exact on ramps.
    expected = [1.5 + 6.5 * 3 / 7 + 5.0, 2.5 + 6.5 * 3 / 7]
    torch.testing.assert_close(feat, torch.tensor([expected]), rtol=0, atol=1e-5)


def test_boxes_to_rois_scales_to_input_pixels():
    rois = boxes_to_rois([torch.tensor([[0.25, 0.5, 0.75, 1.0]]), torch.zeros(0, 4),
                          torch.tensor([[0.0, 0.0, 0.5, 0.5]])], height=64, width=128)
    torch.testing.assert_close(rois, torch.tensor([[0.0, 32.0, 32.0, 96.0, 64.0],
                                                   [2.0, 0.0, 0.0, 64.0, 32.0]]))


def test_groundtruth_rows_group_into_people():
    rows = [("v", 2, 0.1, 0.1, 0.5, 0.5, 3, 1), ("v", 2, 0.1, 0.1, 0.5, 0.5, 7, 1),
            ("v", 2, 0.6, 0.6, 0.9, 0.9, 99, 2),  # action outside the label map
            ("w", 0, 0.0, 0.0, 1.0, 1.0, 1, 1)]
    kf = ava.groundtruth_key_frames(rows, [1, 3, 7])
    assert kf.keys == [("v", 2), ("w", 0)] and kf.num_boxes == 3
    np.testing.assert_allclose(kf.boxes[0], [[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]])
    np.testing.assert_array_equal(kf.labels[0], [[0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(kf.labels[1], [[1, 0, 0]])


def test_detection_boxes_threshold(tmp_path):
    path = tmp_path / "det.csv"
    path.write_text("v,0001,0.1,0.1,0.5,0.5,,0.95\nv,0001,0.2,0.2,0.6,0.6,,0.5\n"
                    "v,0001,0.1,0.1,0.5,0.5,,0.95\nw,0000,0.0,0.0,1.0,1.0,,0.8\n")
    kf = ava.detection_key_frames(path, 0.8, num_classes=2)
    assert kf.keys == [("v", 1), ("w", 0)]
    assert [b.tolist() for b in kf.boxes] == [[[0.1, 0.1, 0.5, 0.5]], [[0.0, 0.0, 1.0, 1.0]]]


def test_timestamp_to_frame():
    assert ava.timestamp_to_frame(2, 25.0) == 50  # synthetic world: second x fps
    assert ava.timestamp_to_frame(902, 30.0, time_offset=900) == 60  # PySlowFast 15-min cut


def test_key_frame_clip_is_centred(world):
    path = next((world / "videos").rglob("*.mp4"))
    data = detect.KeyFrameClips([(path.stem, 1)], {path.stem: path}, frames=4, stride=2,
                                size=64, fps=None, time_offset=0.0)
    item = data[0]
    # second 1 at 25 fps is frame 25, input frame 4 // 2 = 2: frames 21, 23, 25, 27
    np.testing.assert_array_equal(item["clip"], decode_frames(path, [21, 23, 25, 27], 64))
    assert detect.KeyFrameClips([(path.stem, 9)], {path.stem: path}, 4, 2, 64, None,
                                0.0)[0]["clip"] is None  # frame 225 is past the end


def test_detection_rows_one_per_box_and_class():
    kf = ava.KeyFrames([("v", 0), ("w", 1)], [np.zeros((2, 4)), np.ones((1, 4))],
                       [np.zeros((2, 2)), np.zeros((1, 2))])
    scores = np.array([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]])
    rows = detect.detection_rows(kf, scores, np.array([True, False, True]), [4, 9])
    assert [(r[0], r[1], r[6], r[7]) for r in rows] == [("v", 0, 4, 0.1), ("v", 0, 9, 0.2),
                                                        ("w", 1, 4, 0.5), ("w", 1, 9, 0.6)]


def test_detection_rows_are_what_predictions_csv_holds(tmp_path):
    """Scores that print alike must be equal in the rows the mAP is computed from, else the
    official evaluator reading predictions.csv could rank them differently (a CI failure)."""
    kf = ava.KeyFrames([("v", 0)], [np.array([[0.1234567, 0.2, 0.70049, 0.9]] * 2)],
                       [np.zeros((2, 1))])
    scores = np.array([[0.99999991], [0.99999969]])  # both print as 1.000000
    rows = detect.detection_rows(kf, scores, np.array([True, True]), [3])
    detect._write_predictions(tmp_path / "p.csv", rows)
    with open(tmp_path / "p.csv", newline="") as f:
        back = [(r[0], int(r[1]), *map(float, r[2:6]), int(r[6]), float(r[7]))
                for r in csv.reader(f)]
    assert back == rows
    assert rows[0][7] == rows[1][7] == 1.0


# --------------------------------------------------------------------------- CLI


def _val_gt(root: Path) -> list[list[str]]:
    with open(root / "ava" / "annotations" / "ava_val_v2.2.csv", newline="") as f:
        return [r for r in csv.reader(f) if r]


def test_detect_cli_gt_boxes_and_cache(world, tmp_path, monkeypatch):
    out = tmp_path / "det"
    args = ["eval", "detect", *SMALL, "--data", str(world), "--out", str(out)]
    assert main([*args, "--epochs", "20"]) == 0
    r = json.loads((out / "results.json").read_text())
    gt = _val_gt(world)
    assert 0 <= r["metrics"]["map"] <= 1
    assert [c["id"] for c in r["per_class"]] == list(range(1, 9))  # the world's 8 motions
    assert sum(c["num_gt"] for c in r["per_class"]) == len(gt)
    aps = [c["ap"] for c in r["per_class"] if c["num_gt"] > 0]
    assert math.isclose(np.mean(aps), r["metrics"]["map"])
    n_boxes = len({tuple(row[:6]) + (row[7],) for row in gt})
    assert r["boxes_encoded"]["val"] == n_boxes and r["boxes_skipped"]["val"] == 0
    assert r["annotation_boxes_fixed"] == {"clipped": 0, "dropped": 0}
    assert len((out / "predictions.csv").read_text().splitlines()) == 8 * n_boxes
    for name in ("per_class_ap.png", "training_curve.png"):
        assert (out / name).stat().st_size > 0

    def no_encoding(*a, **k):
        raise AssertionError("the encoder ran although the features are cached")

    monkeypatch.setattr(detect, "encode_key_frames", no_encoding)
    monkeypatch.setattr(detect, "load_encoder", no_encoding)
    assert main([*args, "--epochs", "5", "--lr", "0.02"]) == 0
    r2 = json.loads((out / "results.json").read_text())
    assert r2["cache_hit"] == {"train": True, "val": True} and len(r2["history"]) == 5


@pytest.mark.slow
def test_detect_cli_detected_boxes(world, tmp_path):
    out = tmp_path / "det"
    assert main(["eval", "detect", *SMALL, "--data", str(world / "ava"), "--out", str(out),
                 "--boxes", "detections", "--det-thresh", "0.9", "--epochs", "5"]) == 0
    r = json.loads((out / "results.json").read_text())
    with open(world / "ava" / "annotations" / "ava_val_predicted_boxes.csv", newline="") as f:
        kept = [row for row in csv.reader(f) if row and float(row[7]) >= 0.9]
    assert r["boxes"] == "detections" and r["boxes_encoded"]["val"] == len(kept)
    assert 0 <= r["metrics"]["map"] <= 1


def test_detect_cli_fixes_and_counts_boxes_outside_the_frame(world, tmp_path, caplog):
    """A val box past the right edge is clipped, an inverted one dropped; both are counted in
    ``results.json`` and logged."""
    import shutil

    files = ava.find_ava_files(world)
    ann = tmp_path / "ava" / "annotations"
    shutil.copytree(files.train.parent, ann)
    rows = _val_gt(world)
    first, second = list(rows[0]), list(rows[1])
    first[4] = "1.300"  # x2 past the right edge: clipped
    second[2], second[4] = second[4], second[2]  # x1 > x2: dropped
    with open(ann / "ava_val_v2.2.csv", "w", newline="") as f:
        csv.writer(f).writerows([first, second, *rows[2:]])
    out = tmp_path / "det"
    assert main(["eval", "detect", *SMALL, "--data", str(tmp_path / "ava"), "--videos",
                 str(files.videos), "--out", str(out), "--epochs", "2"]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["annotation_boxes_fixed"] == {"clipped": 1, "dropped": 1}
    assert "clipped 1 box(es)" in caplog.text
