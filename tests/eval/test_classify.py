"""``constcl eval classify``: view sampling, multi-view averaging, the probe, split readers and
end-to-end CLI runs on a small synthetic world."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from constcl.cli import main
from constcl.data.decode import decode_frames
from constcl.eval.classify import scoring
from constcl.eval.classify import task as classify_task
from constcl.eval.classify.data import load_splits
from constcl.eval.feature_cache import cached_arrays, encode_views
from constcl.eval.probe import ProbeConfig, fit_linear_probe, predict
from constcl.eval.views import ViewSpec, clamped_clip_indices, spatial_crops, temporal_starts
from tests.eval.eval_world import make_world

SMALL = ["--checkpoint", "random", "--backbone", "r3d_tiny", "--frames", "4", "--stride", "2",
         "--size", "64", "--clips", "2", "--workers", "0"]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_world(tmp_path_factory)


# --------------------------------------------------------------------------- views


def test_temporal_starts_follow_pyslowfast():
    # L = 64, span 15: delta = 49; view i of 3 starts at floor(49 * i / 3) = 0, 16, 32
    assert temporal_starts(64, 15, 3).tolist() == [0, 16, 32]
    assert temporal_starts(64, 15, 1).tolist() == [24]  # one view: the centre clip
    assert temporal_starts(10, 15, 3).tolist() == [0, 0, 0]  # shorter than a clip
    assert clamped_clip_indices(60, 4, 2, 64).tolist() == [60, 62, 63, 63]  # clamped at the end


def test_spatial_crops_left_centre_right():
    frames = np.arange(1 * 4 * 6 * 3, dtype=np.uint8).reshape(1, 4, 6, 3)
    crops = spatial_crops(frames, 4, 3)
    assert crops.shape == (3, 1, 4, 4, 3)
    for crop, left in zip(crops, [0, 1, 2], strict=True):
        np.testing.assert_array_equal(crop[0], frames[0, :, left:left + 4])
    np.testing.assert_array_equal(spatial_crops(frames, 4, 1)[0, 0], frames[0, :, 1:5])


def test_encode_views_uses_the_documented_clips(world):
    """A fake encoder (per-frame mean) sees exactly the clips at the hand-computed indices."""
    path = next((world / "videos").rglob("*.mp4"))
    spec = ViewSpec(frames=4, stride=2, clips=2, crops=1, size=64)
    enc = encode_views(lambda x: x.mean(dim=(1, 3, 4)), [path, path], spec, torch.device("cpu"),
                       batch_size=3)
    assert enc["video_index"].tolist() == [0, 0, 1, 1]
    # 48 frames, span 7: delta 41, starts 0 and floor(41 / 2) = 20
    for row, idx in zip(enc["values"][:2], ([0, 2, 4, 6], [20, 22, 24, 26]), strict=True):
        frames = decode_frames(path, idx, short_side=64).astype(np.float64)
        np.testing.assert_allclose(row, frames.mean(axis=(1, 2, 3)) / 127.5 - 1, atol=1e-5)


def test_multiview_average_hand_computed():
    log3 = math.log(3.0)
    logits = np.array([[0.0, log3], [log3, 0.0],  # video 0: softmax (.25, .75), (.75, .25)
                       [0.0, 0.0], [0.0, log3],   # video 2: (.5, .5), (.25, .75)
                       [5.0, 0.0]])               # video 2: (e^5 / (1 + e^5), 1 / (1 + e^5))
    vid = np.array([0, 0, 2, 2, 2])
    scores = scoring.average_view_scores(logits, np.array([0, 0, 1, 1, 1]))
    p = 1 / (1 + math.exp(-5.0))
    np.testing.assert_allclose(scores, [[0.5, 0.5], [(0.75 + p) / 3, (1.25 + 1 - p) / 3]])
    # video 1 failed to decode (no rows): only videos 0 and 2 are scored
    acc, scores, y = scoring.video_accuracy(logits, vid, np.array([1, 0, 0]))
    assert y.tolist() == [1, 0]
    assert acc[1] == 0.5  # video 0 ties at (.5, .5) -> class 0 (wrong); video 2 -> 0 (right)


def test_linear_probe_separates_a_separable_set():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 30)
    centres = rng.normal(size=(4, 16)) * 5
    feats = centres[labels] + rng.normal(size=(120, 16)) * 0.3 + 100.0  # large offset
    probe, history = fit_linear_probe(feats, labels, 4, ProbeConfig(epochs=30, batch_size=32))
    assert (predict(probe, feats).argmax(1) == labels).all()
    assert history[-1]["train_acc"] == 1.0 and history[-1]["loss"] < history[0]["loss"]


def test_cached_arrays_computes_once(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"a": np.arange(3)}

    a, hit = cached_arrays(tmp_path, "x", {"k": 1}, compute)
    b, hit2 = cached_arrays(tmp_path, "x", {"k": 1}, compute)
    _, hit3 = cached_arrays(tmp_path, "x", {"k": 2}, compute)
    assert (hit, hit2, hit3) == (False, True, False) and len(calls) == 2
    np.testing.assert_array_equal(a["a"], b["a"])


# --------------------------------------------------------------------------- split files


def _listed(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_bytes().decode().split("\r\n") if ln.strip()]


def test_ucf101_and_kinetics_layouts_agree(world):
    ucf = load_splits(world, "ucf101")
    train_lines = _listed(world / "ucfTrainTestlist" / "trainlist01.txt")
    test_lines = _listed(world / "ucfTrainTestlist" / "testlist01.txt")
    assert len(ucf.train) == len(train_lines) and len(ucf.test) == len(test_lines)
    for item, line in zip(ucf.test, test_lines, strict=True):
        assert item.path.name == line.split("/")[1]
        assert ucf.classes[item.label] == line.split("/")[0]
    kin = load_splits(world, "kinetics")
    assert {(i.path, i.label) for i in kin.test} == {(i.path, i.label) for i in ucf.test}


def test_hmdb51_layout(world, tmp_path):
    split_dir = tmp_path / "testTrainMulti_7030_splits"
    split_dir.mkdir()
    videos = sorted((world / "videos").rglob("*.mp4"))
    by_class: dict[str, list[Path]] = {}
    for v in videos:
        by_class.setdefault(v.parent.name, []).append(v)
    names = sorted(by_class)[:2]
    for name in names:  # first video train (1), second test (2), a missing one unused (0)
        lines = [f"{by_class[name][0].name} 1 ", f"{by_class[name][1].name} 2 ", "gone.avi 0 "]
        (split_dir / f"{name}_test_split1.txt").write_text("\n".join(lines) + "\n")
    s = load_splits(tmp_path, "auto", videos=world / "videos")
    assert s.layout == "hmdb51" and s.classes == names and s.missing == 0
    assert [(i.path, i.label) for i in s.train] == [(by_class[n][0], k) for k, n in
                                                    enumerate(names)]
    assert [(i.path, i.label) for i in s.test] == [(by_class[n][1], k) for k, n in
                                                   enumerate(names)]


# --------------------------------------------------------------------------- CLI


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_linear_cli_writes_results_and_reuses_the_cache(world, tmp_path, monkeypatch):
    out = tmp_path / "linear"
    args = ["eval", "classify", *SMALL, "--data", str(world), "--out", str(out)]
    assert main([*args, "--epochs", "20"]) == 0
    r = _results(out)
    n_test = len(_listed(world / "ucfTrainTestlist" / "testlist01.txt"))
    assert r["videos_evaluated"]["test"] == n_test and r["num_classes"] == 12
    assert 0 <= r["metrics"]["top1"] <= r["metrics"]["top5"] <= 1
    assert len(r["history"]) == 20 and r["cache_hit"] == {"train": False, "test": False}
    assert np.asarray(r["confusion_matrix"]).sum() == n_test
    for name in ("confusion.png", "training_curve.png"):
        assert (out / name).stat().st_size > 0

    def no_encoding(*a, **k):
        raise AssertionError("the encoder ran although the features are cached")

    monkeypatch.setattr(classify_task, "encode_views", no_encoding)
    monkeypatch.setattr(classify_task, "load_encoder", no_encoding)
    assert main([*args, "--epochs", "5", "--lr", "0.05"]) == 0
    r2 = _results(out)
    assert r2["cache_hit"] == {"train": True, "test": True} and len(r2["history"]) == 5


def test_knn_cli(world, tmp_path):
    out = tmp_path / "knn"
    assert main(["eval", "classify", *SMALL, "--data", str(world), "--out", str(out),
                 "--mode", "knn", "--crops", "1", "--layout", "kinetics"]) == 0
    m = _results(out)["metrics"]
    assert list(m) == ["recall@1", "recall@5", "recall@10"]
    assert 0 <= m["recall@1"] <= m["recall@5"] <= m["recall@10"] <= 1
    assert (out / "recall_at_k.png").stat().st_size > 0


@pytest.mark.slow
def test_finetune_cli(world, tmp_path):
    out = tmp_path / "ft"
    assert main(["eval", "classify", *SMALL, "--data", str(world), "--out", str(out),
                 "--mode", "finetune", "--epochs", "1", "--batch-size", "4", "--lr", "0.01",
                 "--crops", "1"]) == 0
    r = _results(out)
    assert 0 <= r["metrics"]["top1"] <= r["metrics"]["top5"] <= 1
    assert len(r["history"]) == 1 and math.isfinite(r["history"][0]["loss"])
    assert (out / "training_curve.png").is_file() and (out / "confusion.png").is_file()
