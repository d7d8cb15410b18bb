"""DAVIS-2017 semi-supervised J, F and J&F, as ``davis2017-evaluation`` (``metrics.py``,
``evaluation.py``, ``utils.db_statistics``).

Masks are ``(H, W)`` or ``(T, H, W)`` arrays; label maps hold object ids (0 = background).

* **J**: IoU of the binary object masks; an empty union gives J = 1.
* **F**: one-pixel boundaries (``_seg2bmap``), each dilated with a disk of radius
  ``ceil(bound_th * sqrt(H^2 + W^2))`` (``bound_th = 0.008``); precision = predicted boundary
  pixels within the dilated ground-truth boundary / predicted boundary pixels, recall likewise;
  F = 2PR / (P + R), 0 when P + R = 0. No predicted boundary with a ground-truth one: P=1, R=0;
  the reverse: P=0, R=1; both empty: P=R=1 (F = 1).
* Per object sequence: the first and last frames are dropped, then Mean = nanmean,
  Recall = mean(value > 0.5), Decay = mean of the first quarter - mean of the last quarter.
* Headline: ``J&F-Mean = (mean over objects of J-Mean + mean over objects of F-Mean) / 2``,
  averaged over objects of all sequences, not over sequences.

Void pixels (value 255): the official loader sets them to 0 before building the per-object
masks, so its semi-supervised evaluation counts them as background (its ``== 255`` void test
then never fires). That is the default here (``ignore_void=False``); ``ignore_void=True`` drops
void pixels from J and F instead, as ``db_eval_iou(..., void_pixels)`` would.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

VOID_LABEL = 255


def region_similarity(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None
) -> np.ndarray | float:
    """J: IoU of boolean masks over the last two axes; ``(..., H, W) -> (...)``.

    Pixels where ``void`` is true are ignored. An empty union gives 1.
    """
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise ValueError(f"shape mismatch: gt {gt.shape} vs pred {pred.shape}")
    keep = np.ones_like(gt) if void is None else ~np.asarray(void, dtype=bool)
    inter = np.sum(gt & pred & keep, axis=(-2, -1))
    union = np.sum((gt | pred) & keep, axis=(-2, -1))
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    return float(j) if j.ndim == 0 else j


def seg2bmap(mask: np.ndarray) -> np.ndarray:
    """One-pixel boundary map of a ``(H, W)`` mask (official ``_seg2bmap`` at full size).

    A pixel is on the boundary when it differs from its east, south or south-east neighbour;
    the last row compares with east only, the last column with south only, and the bottom-right
    pixel is never a boundary. Boundaries sit half a pixel towards the origin.
    """
    seg = np.asarray(mask, dtype=bool)
    if seg.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {seg.shape}")
    e = np.zeros_like(seg)
    s = np.zeros_like(seg)
    se = np.zeros_like(seg)
    e[:, :-1] = seg[:, 1:]
    s[:-1, :] = seg[1:, :]
    se[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ e) | (seg ^ s) | (seg ^ se)
    b[-1, :] = seg[-1, :] ^ e[-1, :]
    b[:, -1] = seg[:, -1] ^ s[:, -1]
    b[-1, -1] = False
    return b


def boundary_radius(shape: tuple[int, ...], bound_th: float = 0.008) -> int:
    """Dilation radius in pixels: ``bound_th`` itself if >= 1, else ``ceil(bound_th * diag)``."""
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm(shape[-2:])))


def boundary_f_measure(
    gt: np.ndarray, pred: np.ndarray, void: np.ndarray | None = None, bound_th: float = 0.008
) -> float:
    """F of one frame: ``(H, W)`` boolean ground truth and prediction -> float in [0, 1]."""
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"expected two (H, W) masks, got {gt.shape} and {pred.shape}")
    if void is not None:
        keep = ~np.asarray(void, dtype=bool)
        gt, pred = gt & keep, pred & keep
    footprint = disk(boundary_radius(gt.shape, bound_th)).astype(bool)
    fg_b, gt_b = seg2bmap(pred), seg2bmap(gt)
    n_fg, n_gt = int(fg_b.sum()), int(gt_b.sum())
    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        fg_dil = binary_dilation(fg_b, structure=footprint)
        gt_dil = binary_dilation(gt_b, structure=footprint)
        precision = float(np.sum(fg_b & gt_dil)) / n_fg
        recall = float(np.sum(gt_b & fg_dil)) / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def db_statistics(values: np.ndarray) -> tuple[float, float, float]:
    """``(mean, recall, decay)`` of one object's per-frame J or F values, as the official code.

    Mean = nanmean; recall = mean of ``value > 0.5`` (NaN counts as a miss); decay = mean of the
    first of 4 overlapping bins minus mean of the last, bin edges
    ``round(linspace(1, T, 5)) - 1`` inclusive. The official code casts the edges to ``uint8``,
    which wraps past 256 frames; here they are plain integers.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1 or v.size == 0:
        raise ValueError("expected a non-empty 1-D array of per-frame values")
    with warnings.catch_warnings():  # nanmean of an all-NaN bin warns; the official silences it
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(v))
        recall = float(np.mean(v > 0.5))
        ids = (np.round(np.linspace(1, len(v), 5) + 1e-10) - 1).astype(np.int64)
        bins = [v[ids[i] : ids[i + 1] + 1] for i in range(4)]
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay


def evaluate_sequence(
    gt_labels: np.ndarray,
    pred_labels: np.ndarray,
    *,
    drop_first_last: bool = True,
    ignore_void: bool = False,
    bound_th: float = 0.008,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-object, per-frame J and F of one sequence.

    Args:
        gt_labels: ``(T, H, W)`` integer ground-truth label maps (0 background, 255 void). The
            number of objects is the largest id in the first frame, as in the official loader.
        pred_labels: ``(T, H, W)`` integer predicted label maps with the same ids.
        drop_first_last: drop frames 0 and T-1 (semi-supervised protocol, ``[:, 1:-1]``).
        ignore_void: exclude void pixels (see module docstring; the official result keeps them
            as background).
        bound_th: boundary tolerance as a fraction of the image diagonal.

    Returns:
        ``(J, F)``, each ``(num_objects, T')`` with ``T' = T - 2`` when dropping.

    Raises:
        ValueError: a predicted id above the ground-truth object count (the official script
            aborts on it). Objects never predicted simply get empty masks.
    """
    gt = np.asarray(gt_labels)
    pred = np.asarray(pred_labels)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"expected two (T, H, W) label maps, got {gt.shape} and {pred.shape}")
    void = gt == VOID_LABEL
    first = np.where(void[0], 0, gt[0])
    num_objects = int(first.max())
    if pred.max() > num_objects:
        raise ValueError(f"prediction has id {int(pred.max())} > {num_objects} objects")
    if drop_first_last:
        gt, pred, void = gt[1:-1], pred[1:-1], void[1:-1]
    gt = np.where(void, 0, gt)
    frame_void = void if ignore_void else None
    j = np.zeros((num_objects, len(gt)))
    f = np.zeros((num_objects, len(gt)))
    for o in range(num_objects):
        gt_o, pred_o = gt == o + 1, pred == o + 1
        j[o] = region_similarity(gt_o, pred_o, frame_void)
        for t in range(len(gt)):
            vt = None if frame_void is None else frame_void[t]
            f[o, t] = boundary_f_measure(gt_o[t], pred_o[t], vt, bound_th)
    return j, f


@dataclass(frozen=True)
class DavisSummary:
    """Official DAVIS table: global measures and per-object means.

    ``measures`` keys: ``J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay``.
    ``per_object`` maps ``"<sequence>_<object id>"`` to ``(J-Mean, F-Mean)``.
    """

    measures: dict[str, float]
    per_object: dict[str, tuple[float, float]]


def summarize(per_sequence: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> DavisSummary:
    """Object-averaged DAVIS measures from ``{sequence: (J, F)}`` of :func:`evaluate_sequence`."""
    stats_j, stats_f, per_object = [], [], {}
    for seq, (j, f) in per_sequence.items():
        for o in range(len(j)):
            sj, sf = db_statistics(j[o]), db_statistics(f[o])
            stats_j.append(sj)
            stats_f.append(sf)
            per_object[f"{seq}_{o + 1}"] = (sj[0], sf[0])
    if not stats_j:
        raise ValueError("no objects to summarise")
    mj, mf = np.mean(stats_j, axis=0), np.mean(stats_f, axis=0)
    measures = {
        "J&F-Mean": float((mj[0] + mf[0]) / 2),
        "J-Mean": float(mj[0]),
        "J-Recall": float(mj[1]),
        "J-Decay": float(mj[2]),
        "F-Mean": float(mf[0]),
        "F-Recall": float(mf[1]),
        "F-Decay": float(mf[2]),
    }
    return DavisSummary(measures=measures, per_object=per_object)
