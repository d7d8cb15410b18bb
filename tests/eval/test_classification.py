"""Top-k accuracy, video aggregation and retrieval hit@k: hand cases and torchmetrics agreement."""

from __future__ import annotations

import numpy as np
import pytest

from constcl.eval.metrics.classification import (
    aggregate_by_video,
    retrieval_hit_rate,
    topk_accuracy,
)

SCORES = np.array(
    [
        [0.1, 0.5, 0.3, 0.1],  # label 1: rank 0
        [0.4, 0.3, 0.2, 0.1],  # label 2: rank 2
        [0.1, 0.2, 0.3, 0.4],  # label 0: rank 3
    ]
)
LABELS = np.array([1, 2, 0])


def test_topk_hand_computed() -> None:
    assert topk_accuracy(SCORES, LABELS, ks=(1, 2, 3, 4)) == {1: 1 / 3, 2: 1 / 3, 3: 2 / 3, 4: 1.0}


def test_topk_ties_go_to_the_lower_index() -> None:
    scores = np.array([[1.0, 1.0, 0.0]])
    assert topk_accuracy(scores, np.array([0]), ks=(1,)) == {1: 1.0}
    assert topk_accuracy(scores, np.array([1]), ks=(1, 2)) == {1: 0.0, 2: 1.0}
    with pytest.raises(ValueError, match="outside"):
        topk_accuracy(scores, np.array([1]), ks=(4,))


def test_aggregate_by_video() -> None:
    clips = np.array([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0], [4.0, 0.0]])
    idx = np.array([0, 0, 1, 0])
    np.testing.assert_allclose(aggregate_by_video(clips, idx, reduction="sum"), [[5, 3], [2, 2]])
    np.testing.assert_allclose(aggregate_by_video(clips, idx), [[5 / 3, 1], [2, 2]])
    with pytest.raises(ValueError, match="1 of 3 videos have no clip"):
        aggregate_by_video(clips, idx, num_videos=3)


def test_retrieval_hand_computed() -> None:
    gallery = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g_lab = np.array([0, 1, 2])
    # Query (1, 0.1): cosine order gallery 0, 2, 1. Query (0.2, 1) with class 2: order 1, 2, 0.
    queries = np.array([[1.0, 0.1], [0.2, 1.0]])
    q_lab = np.array([0, 2])
    hits = retrieval_hit_rate(queries, q_lab, gallery, g_lab, ks=(1, 2, 3, 10))
    assert hits == {1: 0.5, 2: 1.0, 3: 1.0, 10: 1.0}  # k = 10 is clamped to the gallery
    # Cosine, not Euclidean: scaling a gallery vector changes nothing.
    scaled = gallery * [[5.0], [1.0], [0.1]]
    assert retrieval_hit_rate(queries, q_lab, scaled, g_lab, ks=(1,)) == {1: 0.5}


def test_retrieval_leave_one_out_skips_self() -> None:
    feats = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = np.array([0, 1, 1])
    # Nearest other item: 0 -> 1 (miss), 1 -> 0 (miss), 2 -> 1 (hit). With k = 2, item 1 also
    # finds 2; item 0 is alone in its class and never hits (itself is not in its gallery).
    assert retrieval_hit_rate(feats, labels, ks=(1, 2)) == {1: 1 / 3, 2: 2 / 3}


def test_agrees_with_torchmetrics() -> None:
    # dev extra: a missing torchmetrics must fail, not skip
    import torch
    import torchmetrics.classification as tm_cls
    import torchmetrics.retrieval as tm_ret

    rng = np.random.default_rng(0)
    scores, labels = rng.normal(size=(200, 12)), rng.integers(0, 12, 200)
    ours = topk_accuracy(scores, labels, ks=(1, 5))
    for k in (1, 5):
        metric = tm_cls.MulticlassAccuracy(num_classes=12, top_k=k, average="micro")
        ref = metric(torch.from_numpy(scores), torch.from_numpy(labels))
        assert ours[k] == pytest.approx(float(ref))

    q, g = rng.normal(size=(40, 16)), rng.normal(size=(60, 16))
    q_lab, g_lab = rng.integers(0, 8, 40), rng.integers(0, 8, 60)
    ours = retrieval_hit_rate(q, q_lab, g, g_lab, ks=(1, 5, 10))
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    gn = g / np.linalg.norm(g, axis=1, keepdims=True)
    sim = torch.from_numpy(qn @ gn.T).flatten()
    target = torch.from_numpy(q_lab[:, None] == g_lab[None, :]).flatten()
    indexes = torch.arange(40).repeat_interleave(60)
    for k in (1, 5, 10):
        ref = tm_ret.RetrievalHitRate(top_k=k)(sim, target, indexes=indexes)
        assert ours[k] == pytest.approx(float(ref))
