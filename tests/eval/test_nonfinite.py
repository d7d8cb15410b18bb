"""Issue 23, case 1: no evaluation number from NaN or inf.

Metrics count a non-finite score as wrong, never right (hand-computed cases with NaN and inf
rows for top-k, kNN retrieval, AVA AP, tracking and propagation affinities); every task refuses
non-finite features, scores or classifier weights with one line naming the task, the checkpoint
and what was not finite (exit 2); loading a backbone refuses non-finite tensors; float flags
must be finite.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from constcl.cli import main
from constcl.eval.metrics.ava_map import ava_frame_map
from constcl.eval.metrics.classification import retrieval_hit_rate, topk_accuracy
from constcl.eval.metrics.tracking import evaluate_sequence
from constcl.eval.propagate.algorithm import PropagationConfig, propagate_frame
from constcl.eval.track.siamfc import SiamFCConfig, SiamFCTracker

NAN, INF = float("nan"), float("inf")


# --------------------------------------------------------------------------- metrics


def test_all_nan_scores_are_never_right():
    """The issue's case: ``scores > true`` is False for NaN, so all-NaN scores ranked every
    true class first (top-1 = top-5 = 1.0)."""
    scores = np.full((4, 6), NAN)
    assert topk_accuracy(scores, np.array([0, 1, 2, 5]), (1, 5)) == {1: 0.0, 5: 0.0}


def test_topk_with_nan_and_inf_rows_hand_computed():
    scores = np.array([
        [0.9, 0.1, 0.0],   # label 0: right at k=1
        [NAN, 0.2, 0.1],   # label 1: the NaN of class 0 ranks above it -> rank 1
        [0.5, INF, 0.1],   # label 1: +inf true score is not finite -> wrong at every k
        [0.5, NAN, 0.9],   # label 1: NaN true score -> wrong at every k
        [-INF, 0.3, 0.2],  # label 2: -inf of another class ranks below it -> rank 1
    ])
    labels = np.array([0, 1, 1, 1, 2])
    # ranks: 0, 1, wrong, wrong, 1
    assert topk_accuracy(scores, labels, (1, 2, 3)) == {1: 0.2, 2: 0.6, 3: 0.6}


def test_knn_retrieval_with_nan_and_inf_features_hand_computed():
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [NAN, 1.0]])
    g_labels = np.array([0, 1, 1])
    queries = np.array([[1.0, 0.1],   # class 0: the NaN gallery item ranks first as a miss,
                        [0.1, 1.0],   # class 1: same; then the right item at rank 2
                        [INF, 0.0]])  # class 0: a non-finite query misses at every k
    hits = retrieval_hit_rate(queries, np.array([0, 1, 0]), gallery, g_labels, ks=(1, 2, 3))
    assert hits == {1: 0.0, 2: pytest.approx(2 / 3), 3: pytest.approx(2 / 3)}


def test_knn_all_nan_features_score_zero():
    feats = np.full((5, 3), NAN)
    assert retrieval_hit_rate(feats, np.zeros(5, int), ks=(1, 4)) == {1: 0.0, 4: 0.0}


GT = [("v", 1, 0.0, 0.0, 0.4, 0.4, 1), ("v", 1, 0.5, 0.5, 0.9, 0.9, 1)]


@pytest.mark.parametrize("bad", [NAN, INF])
def test_ava_ap_counts_a_non_finite_score_as_a_false_positive_first(bad):
    """Boxes A, B of class 1. d1 on A (0.9), d2 on B with a NaN / inf score, d3 on A (0.8, a
    duplicate). Before: NaN sorted last and matched B, AP = 0.5 * 1 + 0.5 * 2/3 = 0.833. Now d2
    is a false positive ranked first: precision 0, 1/2, 1/3 at recall 0, 1/2, 1/2 -> AP 1/4."""
    det = [("v", 1, 0.0, 0.0, 0.4, 0.4, 1, 0.9), ("v", 1, 0.5, 0.5, 0.9, 0.9, 1, bad),
           ("v", 1, 0.0, 0.0, 0.4, 0.4, 1, 0.8)]
    assert ava_frame_map(GT, det, [1]).mean_ap == pytest.approx(0.25)


def test_ava_all_nan_scores_score_zero():
    """The issue's case: all-NaN scores got an mAP above the valid checkpoint's."""
    det = [(*g[:7], NAN) for g in GT]
    assert ava_frame_map(GT, det, [1]).mean_ap == 0.0


def test_tracking_nan_and_inf_rows_fail_both_tests():
    gt = np.array([[10.0, 10, 20, 20]] * 5)
    pred = np.array([[10.0, 10, 20, 20],   # frame 1: the initialisation
                     [10.0, 10, 20, 20],   # right
                     [NAN, 10, 20, 20],
                     [10.0, 10, INF, 20],  # an inf width
                     [-INF, 10, INF, 20]])
    res = evaluate_sequence(pred, gt)
    assert res.precision_curve[-1] == pytest.approx(2 / 5)  # even at 50 px: only two hits
    assert res.success_curve[0] == pytest.approx(2 / 5)


def test_siamfc_gives_a_nan_box_for_a_non_finite_response():
    """A NaN response map has no argmax; before, np.argmax picked its first cell and the
    tracker jumped to the corner as if it had found the target there."""
    calls = {"n": 0}

    def features(x: torch.Tensor) -> torch.Tensor:
        calls["n"] += 1
        out = torch.ones(len(x), 4, x.shape[-2] // 8, x.shape[-1] // 8)
        return out * (NAN if calls["n"] > 1 else 1.0)  # the exemplar is fine, searches NaN

    cfg = SiamFCConfig(exemplar_sz=31, instance_sz=63, response_up=2)
    tracker = SiamFCTracker(features, 8, cfg)
    frame = np.zeros((64, 64, 3), np.uint8)
    boxes, _ = tracker.track([frame, frame], [20, 20, 10, 10])
    assert np.isnan(boxes[1]).all() and np.isfinite(boxes[0]).all()


def test_propagation_ignores_non_finite_affinities_hand_computed():
    """Query cell vs 3 key frames of 1 cell: the NaN key and the inf key get weight 0, so the
    label is the finite key's; a query with no finite affinity gets no label at all."""
    keys = torch.tensor([[[1.0]], [[NAN]], [[INF]]])  # (M=3, C=1, N=1)
    labels = torch.tensor([[[0.0], [1.0]], [[1.0], [0.0]], [[1.0], [0.0]]])  # (M, L=2, N)
    cfg = PropagationConfig(topk=3, radius=0)
    out = propagate_frame(torch.tensor([[1.0]]), keys, labels, 3, torch.zeros(1, 2), cfg)
    torch.testing.assert_close(out, torch.tensor([[0.0], [1.0]]))
    none = propagate_frame(torch.tensor([[NAN]]), keys, labels, 3, torch.zeros(1, 2), cfg)
    torch.testing.assert_close(none, torch.zeros(2, 1))


# --------------------------------------------------------------------------- tasks


def _one_error(caplog) -> str:
    errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(errors) == 1 and "\n" not in errors[0], errors
    return errors[0]


SMALL = ["--checkpoint", "random", "--backbone", "r3d_tiny", "--frames", "4", "--stride", "2",
         "--size", "64", "--clips", "2", "--workers", "0"]


def _with_nan(arrays: dict, key: str) -> dict:
    arrays = dict(arrays)
    values = arrays[key].astype(np.float32).copy()
    values.reshape(-1)[::7] = np.nan
    arrays[key] = values
    return arrays


@pytest.fixture
def nan_cache(monkeypatch):
    """Every feature cache of every task returns features with some NaN."""
    from constcl.eval.classify import task as classify_task
    from constcl.eval.detect import task as detect_task
    from constcl.eval.propagate import task as propagate_task

    def patched(real, key):
        def cached(*args, **kwargs):
            arrays, hit = real(*args, **kwargs)
            return _with_nan(arrays, key), hit
        return cached

    monkeypatch.setattr(classify_task, "cached_arrays",
                        patched(classify_task.cached_arrays, "values"))
    monkeypatch.setattr(detect_task, "cached_arrays",
                        patched(detect_task.cached_arrays, "features"))
    monkeypatch.setattr(propagate_task, "cached_arrays",
                        patched(propagate_task.cached_arrays, "features"))


@pytest.mark.parametrize("mode", ["linear", "knn"])
def test_classify_refuses_nan_features(world, tmp_path, caplog, nan_cache, mode):
    out = tmp_path / "out"
    code = main(["eval", "classify", *SMALL, "--data", str(world), "--out", str(out),
                 "--epochs", "2", "--mode", mode])
    message = _one_error(caplog)
    assert code == 2
    assert "eval classify" in message and "checkpoint random" in message
    assert "pooled res5 features of the train views" in message and "NaN" in message
    assert not (out / "results.json").exists()


def test_classify_refuses_a_probe_that_diverged(world, tmp_path, caplog):
    out = tmp_path / "out"
    code = main(["eval", "classify", *SMALL, "--data", str(world), "--out", str(out),
                 "--epochs", "3", "--lr", "3e38"])
    message = _one_error(caplog)
    assert code == 2 and "linear probe" in message and "lower --lr" in message
    assert not (out / "results.json").exists()


def test_detect_refuses_a_classifier_that_diverged(world, tmp_path, caplog):
    out = tmp_path / "out"
    code = main(["eval", "detect", *SMALL[:8], "--workers", "0", "--data", str(world),
                 "--out", str(out), "--epochs", "3", "--lr", "3e38"])
    message = _one_error(caplog)
    assert code == 2 and "eval detect" in message and "RoI classifier's training loss" in message
    assert not (out / "results.json").exists()


def test_detect_refuses_nan_features(world, tmp_path, caplog, nan_cache):
    code = main(["eval", "detect", *SMALL[:8], "--workers", "0", "--data", str(world),
                 "--out", str(tmp_path / "out"), "--epochs", "2", "--size", "64"])
    message = _one_error(caplog)
    assert code == 2 and "eval detect" in message and "RoI features" in message


def test_propagate_refuses_nan_features(world, tmp_path, caplog, nan_cache):
    code = main(["eval", "propagate", "--checkpoint", "random", "--backbone", "r3d_tiny",
                 "--data", str(world), "--out", str(tmp_path / "out"), "--sequences", "1",
                 "--workers", "0"])
    message = _one_error(caplog)
    assert code == 2 and "eval propagate" in message and "feature maps of sequence" in message


class _NaNMaps(nn.Module):
    stride = 8

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((len(x), 4, math.ceil(x.shape[-2] / 8), math.ceil(x.shape[-1] / 8)),
                          NAN)


def test_track_refuses_nan_features(world, tmp_path, caplog, monkeypatch):
    from constcl.eval.track import task as track_task

    monkeypatch.setattr(track_task, "FrameEncoder", lambda *a, **k: _NaNMaps())
    code = main(["eval", "track", "--checkpoint", "random", "--backbone", "r3d_tiny",
                 "--data", str(world), "--out", str(tmp_path / "out"), "--sequences", "1",
                 "--workers", "0"])
    message = _one_error(caplog)
    assert code == 2 and "eval track" in message and "feature maps" in message


def test_a_checkpoint_with_a_nan_weight_is_refused_on_load(world, tmp_path, caplog):
    """A few corrupted bytes: before, every evaluation ran on it (and classify could report
    top-1 = 1.0)."""
    from constcl.engine.export import export_backbone
    from constcl.models import build_model

    model = build_model("r3d_tiny", variant="constcl", local_source="y", context_length=3)
    with torch.no_grad():
        model.backbone.stem[0].weight[0, 0, 0, 0, 0] = NAN
    path = export_backbone(model, tmp_path / "backbone.safetensors",
                           {"model": {"backbone": "r3d_tiny", "variant": "constcl",
                                      "local_source": "y"}})
    with caplog.at_level(logging.INFO):
        code = main(["eval", "classify", "--checkpoint", str(path), "--data", str(world),
                     "--out", str(tmp_path / "out"), *SMALL[4:]])
    message = _one_error(caplog)
    assert code == 2 and str(path) in message and "NaN or inf" in message
    assert "trunk.stem" in message


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_float_flags_must_be_finite(tmp_path, capsys, value):
    """``float()`` accepts them and ``lr > 0`` let nan and inf through."""
    with pytest.raises(SystemExit) as err:
        main(["eval", "classify", *SMALL, "--data", str(tmp_path), "--out",
              str(tmp_path / "out"), f"--lr={value}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert err.value.code == 2 and len(lines) == 1
    assert "--lr must be a finite number" in lines[0]


def test_settings_refuse_non_finite_fields_nested_ones_too(tmp_path):
    from constcl.eval import classify, track
    from constcl.eval.track.siamfc import SiamFCConfig as Cfg

    with pytest.raises(ValueError, match="lr must be a finite number"):
        classify.Settings(checkpoint="random", backbone="r3d_tiny", data=tmp_path,
                          out=tmp_path, lr=INF)
    with pytest.raises(ValueError, match="lr must be at most 3.403e"):  # torch would raise
        classify.Settings(checkpoint="random", backbone="r3d_tiny", data=tmp_path,
                          out=tmp_path, lr=1e300)
    with pytest.raises(ValueError, match="tracker.scale_step must be a finite number"):
        track.Settings(checkpoint="random", backbone="r3d_tiny", data=tmp_path, out=tmp_path,
                       tracker=Cfg(scale_step=NAN))
