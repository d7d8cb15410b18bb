"""OTB one-pass evaluation (OPE): precision at 20 px and success AUC, as got10k's ``ExperimentOTB``.

Boxes are ``(x, y, w, h)`` in pixels, ``x, y`` the top-left corner (OTB ``groundtruth_rect.txt``
rows; the 1-based origin does not matter because both sides use it).

* Centre: ``xy + (wh - 1) / 2`` (got10k ``center_error``); the ``-1`` cancels in the distance.
* IoU: continuous, **no** ``+1`` (intersection ``min(x + w) - max(x)``), union with ``+eps``,
  clipped to ``[0, 1]`` (got10k ``rect_iou``), so zero-area boxes give IoU 0.
* Precision curve: fraction of frames with centre error ``<=`` t for t = 0, 1, ..., 50 px; the
  precision score is the value at 20 px.
* Success curve: fraction of frames with IoU ``>`` t (strict) for 21 thresholds
  ``linspace(0, 1, 21)``; the success score (AUC) is the mean of the 21 values, so a perfect
  tracker scores 20/21. The success rate is the value at IoU 0.5.
* Frame 1 is the initialisation: its prediction is replaced by the ground truth
  (``boxes[0] = anno[0]``), so it always counts as a hit.
* Overall curves are the mean of per-sequence curves (sequence-averaged, not frame-pooled).

Invalid values: a prediction row with NaN or inf anywhere fails both tests (as in got10k for
NaN, where NaN compares False; an inf width could otherwise still give a finite centre or IoU).
OTB-2015 has no absent-target frames; a ground-truth row with NaN or ``w <= 0`` or ``h <= 0`` is
"absent". got10k has no rule for it and counts it as a failure (NaN) or with IoU 0 (zero size);
that is the default here. ``exclude_absent=True`` instead drops those frames from both curves
(the GOT-10k / LaSOT convention).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PRECISION_THRESHOLDS = np.arange(0, 51, dtype=np.float64)  # pixels, 51 bins
SUCCESS_THRESHOLDS = np.linspace(0.0, 1.0, 21)  # IoU, 21 bins
PRECISION_AT_PX = 20
_EPS = np.finfo(float).eps


def center_error(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distance between box centres ``xy + (wh - 1) / 2``: ``(N, 4), (N, 4) -> (N,)``.

    NaN or inf in either box gives ``inf`` (a miss at every threshold).
    """
    pred, gt = _as_boxes(pred), _as_boxes(gt)
    with np.errstate(invalid="ignore", over="ignore"):
        c1 = pred[:, :2] + (pred[:, 2:] - 1.0) / 2.0
        c2 = gt[:, :2] + (gt[:, 2:] - 1.0) / 2.0
        err = np.sqrt(np.sum((c1 - c2) ** 2, axis=1))
    return np.where(_finite_rows(pred, gt) & ~np.isnan(err), err, np.inf)


def rect_iou(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of ``(N, 4)`` ``x, y, w, h`` boxes, no ``+1``, ``eps`` in the union, clipped to [0, 1].

    NaN or inf in either box gives 0.
    """
    pred, gt = _as_boxes(pred), _as_boxes(gt)
    with np.errstate(invalid="ignore", over="ignore"):
        x1 = np.maximum(pred[:, 0], gt[:, 0])
        y1 = np.maximum(pred[:, 1], gt[:, 1])
        x2 = np.minimum(pred[:, 0] + pred[:, 2], gt[:, 0] + gt[:, 2])
        y2 = np.minimum(pred[:, 1] + pred[:, 3], gt[:, 1] + gt[:, 3])
        inter = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
        union = pred[:, 2] * pred[:, 3] + gt[:, 2] * gt[:, 3] - inter
        iou = np.clip(inter / (union + _EPS), 0.0, 1.0)
    return np.where(_finite_rows(pred, gt) & ~np.isnan(iou), iou, 0.0)


def _finite_rows(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """``(N,)`` True where both boxes are finite."""
    return np.isfinite(pred).all(axis=1) & np.isfinite(gt).all(axis=1)


def _as_boxes(boxes: np.ndarray) -> np.ndarray:
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"expected (N, 4) boxes x, y, w, h; got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class OPEResult:
    """One-pass-evaluation curves and scores of one sequence, or the mean over sequences.

    Attributes:
        precision_curve: ``(51,)`` fraction of frames with centre error <= 0..50 px.
        success_curve: ``(21,)`` fraction of frames with IoU > linspace(0, 1, 21).
        precision_score: ``precision_curve[20]`` (precision at 20 px).
        success_score: mean of ``success_curve`` (AUC).
        success_rate: ``success_curve[10]`` (IoU > 0.5).
        num_frames: frames evaluated (summed over sequences for an average).
    """

    precision_curve: np.ndarray
    success_curve: np.ndarray
    precision_score: float
    success_score: float
    success_rate: float
    num_frames: int

    @classmethod
    def from_curves(cls, prec: np.ndarray, succ: np.ndarray, num_frames: int) -> OPEResult:
        return cls(
            precision_curve=prec,
            success_curve=succ,
            precision_score=float(prec[PRECISION_AT_PX]),
            success_score=float(np.mean(succ)),
            success_rate=float(succ[len(SUCCESS_THRESHOLDS) // 2]),
            num_frames=num_frames,
        )


def evaluate_sequence(
    pred_boxes: np.ndarray,
    gt_boxes: np.ndarray,
    *,
    first_frame_is_gt: bool = True,
    exclude_absent: bool = False,
) -> OPEResult:
    """OPE precision and success of one sequence.

    Args:
        pred_boxes: ``(T, 4)`` tracker output ``x, y, w, h`` in pixels, one row per frame.
        gt_boxes: ``(T, 4)`` ground truth, same format. Lengths must match (got10k truncates
            with a warning; here a mismatch is an error).
        first_frame_is_gt: replace the frame-1 prediction by the ground truth (OTB protocol).
        exclude_absent: drop frames whose ground truth has NaN or ``w <= 0`` / ``h <= 0``
            instead of counting them as failures.
    """
    pred, gt = _as_boxes(pred_boxes).copy(), _as_boxes(gt_boxes)
    if len(pred) != len(gt):
        raise ValueError(f"{len(pred)} predicted boxes for {len(gt)} ground-truth boxes")
    if len(gt) == 0:
        raise ValueError("empty sequence")
    if first_frame_is_gt:
        pred[0] = gt[0]
    ious, errors = rect_iou(pred, gt), center_error(pred, gt)
    if exclude_absent:
        present = np.all(np.isfinite(gt), axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0)
        ious, errors = ious[present], errors[present]
        if len(ious) == 0:
            raise ValueError("no frame with the target present")
    prec = np.mean(errors[:, None] <= PRECISION_THRESHOLDS[None, :], axis=0)
    succ = np.mean(ious[:, None] > SUCCESS_THRESHOLDS[None, :], axis=0)
    return OPEResult.from_curves(prec, succ, len(ious))


def average_over_sequences(results: Mapping[str, OPEResult]) -> OPEResult:
    """Sequence-averaged curves (mean of per-sequence curves) and the scores read off them."""
    if not results:
        raise ValueError("no sequences")
    prec = np.mean([r.precision_curve for r in results.values()], axis=0)
    succ = np.mean([r.success_curve for r in results.values()], axis=0)
    return OPEResult.from_curves(prec, succ, sum(r.num_frames for r in results.values()))


def evaluate_ope(
    predictions: Mapping[str, np.ndarray],
    groundtruth: Mapping[str, np.ndarray],
    *,
    exclude_absent: bool = False,
) -> tuple[dict[str, OPEResult], OPEResult]:
    """OPE over a benchmark: ``{sequence: (T, 4) boxes}`` for predictions and ground truth.

    Returns ``(per_sequence, average)``. Every ground-truth sequence must have predictions.
    """
    missing = sorted(set(groundtruth) - set(predictions))
    if missing:
        raise ValueError(f"no predictions for sequences {missing}")
    per_seq = {
        name: evaluate_sequence(predictions[name], gt, exclude_absent=exclude_absent)
        for name, gt in groundtruth.items()
    }
    return per_seq, average_over_sequences(per_seq)


def plot_ope_curves(
    results: Mapping[str, OPEResult], out_dir: str | Path, title: str = "OPE"
) -> tuple[Path, Path]:
    """Write ``precision_plots.png`` and ``success_plots.png`` (got10k names) into ``out_dir``.

    ``results`` maps a legend label (tracker or encoder name) to its sequence-averaged result;
    legends show precision at 20 px and success AUC like the OTB toolkit. Uses the Agg canvas
    directly, so the global matplotlib backend is left alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranked = sorted(results.items(), key=lambda kv: -kv[1].success_score)
    specs = [
        ("precision_plots.png", PRECISION_THRESHOLDS, "precision_curve", "precision_score",
         "Location error threshold (px)", "Precision", f"Precision plots of {title}"),
        ("success_plots.png", SUCCESS_THRESHOLDS, "success_curve", "success_score",
         "Overlap threshold", "Success rate", f"Success plots of {title}"),
    ]  # fmt: skip
    paths = []
    for fname, xs, curve, score, xlabel, ylabel, fig_title in specs:
        fig = Figure(figsize=(5, 4))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for label, res in ranked:
            ax.plot(xs, getattr(res, curve), label=f"{label} [{getattr(res, score):.3f}]")
        ax.set(xlabel=xlabel, ylabel=ylabel, title=fig_title, xlim=(xs[0], xs[-1]), ylim=(0, 1))
        ax.grid(True)
        ax.legend(loc="lower left" if curve == "success_curve" else "lower right")
        fig.tight_layout()
        fig.savefig(out / fname, dpi=150)
        paths.append(out / fname)
    return paths[0], paths[1]
