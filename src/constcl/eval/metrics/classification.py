"""Action-recognition metrics: top-k accuracy, video-level aggregation, retrieval hit@k.

* Top-k accuracy is micro-averaged (fraction of samples), the number papers report; ties are
  broken by class index (a lower index ranks first, as a stable sort of the scores).
* Non-finite numbers are never right: a sample whose true-class score is NaN or inf is wrong at
  every k, and another class's NaN score ranks above the true class. In retrieval, a query
  with a non-finite feature misses at every k, and a gallery item with one (or a NaN
  similarity) ranks first and is never a hit. The tasks refuse such features and scores
  before they get here (``eval.finite``); these rules only make sure no caller can profit.
* Video-level scores: clip scores summed or averaged by video index (torchvision's video
  classification reference sums; the argmax is the same either way).
* Retrieval (VCOP protocol, docs/evaluation.md section 5): queries are test videos, the gallery is
  train videos; cosine similarity; hit@k = fraction of queries with at least one of the k
  nearest gallery videos of the query's class. Without a gallery, every query searches the
  other queries (leave-one-out).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np


def topk_accuracy(
    scores: np.ndarray, labels: np.ndarray, ks: Sequence[int] = (1, 5)
) -> dict[int, float]:
    """Fraction of samples whose label is among the k highest scores.

    Args:
        scores: ``(N, C)`` class scores (logits, probabilities or aggregated video scores).
        labels: ``(N,)`` integer labels in ``[0, C)``.
        ks: the k values, each ``1 <= k <= C``.

    Returns:
        ``{k: accuracy}``. The rank of the true class is the number of classes with a higher
        (or NaN) score plus the number of lower-indexed classes with an equal score; a
        non-finite true-class score ranks last (wrong at every k).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if scores.ndim != 2 or labels.shape != (scores.shape[0],):
        raise ValueError(
            f"expected (N, C) scores and (N,) labels; got {scores.shape}, {labels.shape}"
        )
    n, c = scores.shape
    if n == 0:
        raise ValueError("no samples")
    if labels.min() < 0 or labels.max() >= c:
        raise ValueError(f"labels must lie in [0, {c})")
    true = scores[np.arange(n), labels][:, None]
    before = np.arange(c)[None, :] < labels[:, None]
    rank = (np.sum(scores > true, axis=1) + np.sum((scores == true) & before, axis=1)
            + np.sum(np.isnan(scores), axis=1))  # (a NaN true score is counted below)
    rank = np.where(np.isfinite(true[:, 0]), rank, c)
    out = {}
    for k in ks:
        if not 1 <= k <= c:
            raise ValueError(f"k={k} outside [1, {c}]")
        out[int(k)] = float(np.mean(rank < k))
    return out


def aggregate_by_video(
    values: np.ndarray,
    video_index: np.ndarray,
    num_videos: int | None = None,
    reduction: Literal["sum", "mean"] = "mean",
) -> np.ndarray:
    """Combine per-clip rows (scores or features) into per-video rows by video index.

    Args:
        values: ``(M, D)`` one row per clip / view.
        video_index: ``(M,)`` integer video index of each clip, in ``[0, V)``.
        num_videos: ``V``; defaults to ``max(video_index) + 1``.
        reduction: ``"sum"`` or ``"mean"`` over the clips of a video.

    Returns:
        ``(V, D)``.

    Raises:
        ValueError: some video in ``[0, V)`` has no clip (it would silently score zero). Fill a
            bank by dataset index so DistributedSampler padding cannot count a clip twice.
    """
    values = np.asarray(values, dtype=np.float64)
    idx = np.asarray(video_index, dtype=np.int64)
    if values.ndim != 2 or idx.shape != (values.shape[0],):
        raise ValueError(
            f"expected (M, D) values and (M,) indices; got {values.shape}, {idx.shape}"
        )
    if reduction not in ("sum", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}")
    v = int(idx.max()) + 1 if num_videos is None else int(num_videos)
    if idx.size and (idx.min() < 0 or idx.max() >= v):
        raise ValueError(f"video indices must lie in [0, {v})")
    counts = np.bincount(idx, minlength=v)
    if np.any(counts == 0):
        raise ValueError(f"{int(np.sum(counts == 0))} of {v} videos have no clip")
    out = np.zeros((v, values.shape[1]))
    np.add.at(out, idx, values)
    return out / counts[:, None] if reduction == "mean" else out


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):  # NaN / inf rows stay non-finite (never a hit)
        return x / np.maximum(norm, 1e-12)


def retrieval_hit_rate(
    query_features: np.ndarray,
    query_labels: np.ndarray,
    gallery_features: np.ndarray | None = None,
    gallery_labels: np.ndarray | None = None,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[int, float]:
    """Top-k retrieval "recall" (hit rate) with cosine similarity.

    Args:
        query_features: ``(Q, D)`` one feature per query video (e.g. the mean of its 10 clip
            features; say whether clips were L2-normalised before averaging).
        query_labels: ``(Q,)`` integer classes.
        gallery_features: ``(G, D)`` gallery (train split) features; ``None`` for
            leave-one-out retrieval among the queries (a query never retrieves itself).
        gallery_labels: ``(G,)`` classes of the gallery.
        ks: the k values; a k larger than the gallery is clamped to the gallery size.

    Returns:
        ``{k: fraction of queries with a same-class video among their k nearest}``. Ties in
        similarity keep gallery order (stable sort).
    """
    q = _l2_normalize(np.asarray(query_features, dtype=np.float64))
    q_lab = np.asarray(query_labels)
    leave_one_out = gallery_features is None
    if leave_one_out:
        if gallery_labels is not None:
            raise ValueError("gallery_labels given without gallery_features")
        g, g_lab = q, q_lab
    else:
        if gallery_labels is None:
            raise ValueError("gallery_features given without gallery_labels")
        g = _l2_normalize(np.asarray(gallery_features, dtype=np.float64))
        g_lab = np.asarray(gallery_labels)
    if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
        raise ValueError(f"feature shapes {q.shape} and {g.shape} do not match")
    if q_lab.shape != (len(q),) or g_lab.shape != (len(g),):
        raise ValueError("one label per feature row expected")
    with np.errstate(invalid="ignore", over="ignore"):
        sim = q @ g.T
    # never right: a non-finite similarity (from a NaN / inf feature) ranks first, as a miss
    broken = ~np.isfinite(sim) | ~np.isfinite(q).all(axis=1)[:, None]
    sim = np.where(broken, np.inf, sim)
    if leave_one_out:
        np.fill_diagonal(sim, -np.inf)
    n_gallery = len(g) - 1 if leave_one_out else len(g)
    if n_gallery < 1 or len(q) == 0:
        raise ValueError("need at least one query and one gallery item")
    k_max = min(max(ks), n_gallery)
    order = np.argsort(-sim, axis=1, kind="stable")[:, :k_max]
    right = (g_lab[order] == q_lab[:, None]) & ~np.take_along_axis(broken, order, axis=1)
    hits = np.cumsum(right, axis=1) > 0
    return {int(k): float(np.mean(hits[:, min(k, k_max) - 1])) for k in ks}
