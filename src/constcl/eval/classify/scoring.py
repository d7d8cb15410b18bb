"""Scores of multi-view classification: per-video averaging, top-k, the view-id bookkeeping."""

from __future__ import annotations

import numpy as np

from constcl.eval.metrics.classification import aggregate_by_video, topk_accuracy

__all__ = ["average_view_scores", "compact_video_index", "video_accuracy"]


def average_view_scores(view_logits: np.ndarray, video_index: np.ndarray,
                        num_videos: int | None = None) -> np.ndarray:
    """Per-video scores: the softmax of every view ``(M, C)``, averaged over the views of each
    video (``video_index (M,)``) -> ``(V, C)``."""
    z = np.asarray(view_logits, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):  # inf / NaN rows stay NaN: never right
        z = np.exp(z - z.max(axis=1, keepdims=True))
        z = z / z.sum(axis=1, keepdims=True)
    return aggregate_by_video(z, video_index, num_videos)


def compact_video_index(video_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(video ids present, video_index renumbered to 0..len(present)-1)."""
    present, compact = np.unique(video_index, return_inverse=True)
    return present, compact


def video_accuracy(view_logits: np.ndarray, video_index: np.ndarray,
                   labels: np.ndarray) -> tuple[dict[int, float], np.ndarray, np.ndarray]:
    """Top-1 / top-5 of multi-view averaged scores.

    Args:
        view_logits: ``(M, C)``; video_index: ``(M,)`` indices into ``labels`` (videos that
            failed to decode simply have no rows); labels: ``(N,)`` class of every video.

    Returns:
        (``{1: top1, 5: top5}`` (k clamped to C), per-video scores ``(V, C)``, their labels).
    """
    present, compact = compact_video_index(video_index)
    scores = average_view_scores(view_logits, compact, len(present))
    y = np.asarray(labels)[present]
    ks = sorted({1, min(5, scores.shape[1])})
    return topk_accuracy(scores, y, ks), scores, y


# --------------------------------------------------------------------------- features
