"""PNG plots of evaluation results (matplotlib, Agg backend, no display needed).

Each function draws one figure from plain arrays, saves it and returns the path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["bar_chart", "confusion_matrix", "plot_confusion", "plot_training_curve"]


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int counts; row = true class, column = predicted class."""
    out = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(out, (np.asarray(labels, int), np.asarray(predictions, int)), 1)
    return out


def _save(fig: plt.Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_confusion(matrix: np.ndarray, class_names: Sequence[str], path: str | os.PathLike[str],
                   title: str = "confusion matrix") -> Path:
    """Row-normalised confusion matrix with counts; class names on the axes up to 40 classes."""
    c = len(class_names)
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape), where=rows > 0)
    side = min(4 + 0.35 * c, 20)
    fig, ax = plt.subplots(figsize=(side + 1, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if c <= 40:
        ax.set_xticks(range(c), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(c), class_names, fontsize=7)
        for i, j in zip(*np.nonzero(matrix), strict=True):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=6,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(fig, path)


def plot_training_curve(history: Sequence[dict[str, float]], path: str | os.PathLike[str],
                        title: str = "classifier training") -> Path:
    """Training loss (left axis) and every ``*acc*`` / ``*map*`` / ``*top*`` key (right axis)
    per epoch; a metric missing from some rows (evaluated every few epochs) is drawn where
    present."""
    epochs = [h["epoch"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(epochs, [h["loss"] for h in history], color="tab:red", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    metric_keys = list(dict.fromkeys(k for h in history for k in h
                                     if "acc" in k or "map" in k or "top" in k))
    if metric_keys:
        ax2 = ax.twinx()
        for k in metric_keys:
            rows = [h for h in history if k in h]
            ax2.plot([h["epoch"] for h in rows], [h[k] for h in rows], marker=".", label=k)
        ax2.set_ylabel("accuracy / mAP")
        ax2.set_ylim(0, 1.02)
        ax2.legend(loc="center right", fontsize=8)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title)
    return _save(fig, path)


def bar_chart(names: Sequence[str], values: Sequence[float], path: str | os.PathLike[str],
              ylabel: str, title: str, mean: float | None = None) -> Path:
    """One bar per name (NaN bars are left empty), an optional dashed mean line."""
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * len(names) + 2), 4))
    vals = np.nan_to_num(np.asarray(values, dtype=float), nan=0.0)
    ax.bar(range(len(names)), vals, color="tab:blue")
    many = len(names) > 4
    ax.set_xticks(range(len(names)), names, rotation=60 if many else 0,
                  ha="right" if many else "center", fontsize=8)
    if mean is not None and np.isfinite(mean):
        ax.axhline(mean, color="tab:red", linestyle="--", label=f"mean {mean:.3f}")
        ax.legend(fontsize=8)
    ax.set_ylim(0, 1.0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return _save(fig, path)
