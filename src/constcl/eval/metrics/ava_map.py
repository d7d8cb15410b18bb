"""AVA frame-level detection mAP at IoU 0.5, as the official ActivityNet / PySlowFast evaluator.

An "image" is a key frame ``(video_id, timestamp)``. For every evaluated class and every key
frame, detections are visited in descending score order; each one looks only at its argmax-IoU
ground-truth box of the same class on the same key frame and is a true positive when that IoU is
``>= 0.5`` and that box is still unmatched (no fall-back to the second-best box). Per class, all
detections are ranked by score and the PASCAL VOC all-point AP is taken (precision envelope from
the right, sum of ``(r_i - r_{i-1}) * p_i`` where recall changes). Classes with no ground truth
are left out of the mean; a class with ground truth but no detection has AP 0. Detections on key
frames without any ground truth are false positives. See ``docs/evaluation.md`` section 2.3.

A detection whose score is NaN or inf is never right: it matches no box and ranks above every
finite score as a false positive (the official evaluator's sort would put a NaN anywhere, and
an all-NaN submission could score like a perfect one). ``eval detect`` refuses such scores
before they get here; the rule only makes sure no caller can profit from them.

Box convention: ``x1, y1, x2, y2`` with ``(0, 0)`` at the top left, normalised to ``[0, 1]``
(pixels work too). IoU has **no** ``+1`` on widths and heights (TF object-detection
``np_box_ops.iou``), so it is scale-invariant per axis. Detections with ``x2 <= x1`` or
``y2 <= y1`` are dropped before matching (``PerImageEvaluation._remove_invalid_boxes``).

Rows are ``(video_id, timestamp, x1, y1, x2, y2, class_id, score)``; ground-truth rows may have 7
columns or carry the ``person_id`` as an 8th column, which is ignored. Timestamps are cast with
``int()`` as the official ``make_image_key`` does.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from constcl.data.sources import read_text as read_text_utf8
from constcl.errors import DataFileError

# The 60 classes of ``ava_action_list_v2.2_for_activitynet_2019.pbtxt`` (ids in the 80-class
# space, docs/evaluation.md section 2.2). The 20 ids left out are 2, 16, 18, 19, 21, 23, 25, 31, 32,
# 33, 35, 39, 40, 42, 44, 50, 53, 55, 71 and 75.
AVA_V22_CLASS_IDS: tuple[int, ...] = (
    1, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17, 20, 22, 24, 26, 27,
    28, 29, 30, 34, 36, 37, 38, 41, 43, 45, 46, 47, 48, 49, 51, 52, 54, 56, 57, 58,
    59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 72, 73, 74, 76, 77, 78, 79, 80,
)  # fmt: skip

AVARow = tuple  # (video_id: str, timestamp: int, x1, y1, x2, y2: float, class_id: int[, score])
Key = tuple[str, int]


@dataclass(frozen=True)
class AVAMapResult:
    """Result of :func:`ava_frame_map`.

    Attributes:
        mean_ap: mean of ``per_class_ap`` (NaN when no evaluated class has ground truth). This is
            the official ``PascalBoxes_Precision/mAP@0.5IOU``.
        per_class_ap: AP of every evaluated class that has at least one ground-truth box.
        num_groundtruth: number of ground-truth boxes of every evaluated class (zeros included).
    """

    mean_ap: float
    per_class_ap: dict[int, float]
    num_groundtruth: dict[int, int]


@dataclass(frozen=True)
class _Columns:
    keys: list[Key]
    boxes: np.ndarray  # (N, 4) float, x1 y1 x2 y2
    classes: np.ndarray  # (N,) int
    scores: np.ndarray  # (N,) float


def _to_columns(rows: Sequence[Sequence[object]], with_scores: bool) -> _Columns:
    keys: list[Key] = []
    boxes = np.zeros((len(rows), 4), dtype=np.float64)
    classes = np.zeros(len(rows), dtype=np.int64)
    scores = np.ones(len(rows), dtype=np.float64)
    for i, row in enumerate(rows):
        if len(row) not in (7, 8):
            raise ValueError(f"AVA row {i} has {len(row)} columns, expected 7 or 8: {row!r}")
        if with_scores and len(row) != 8:
            raise ValueError(f"detection row {i} has no score column: {row!r}")
        keys.append((str(row[0]), int(row[1])))  # type: ignore[call-overload]
        boxes[i] = [float(v) for v in row[2:6]]  # type: ignore[arg-type]
        classes[i] = int(row[6])  # type: ignore[call-overload]
        if with_scores:
            scores[i] = float(row[7])  # type: ignore[arg-type]
    return _Columns(keys, boxes, classes, scores)


def box_iou_xyxy(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU of ``(N, 4)`` and ``(M, 4)`` boxes ``x1, y1, x2, y2`` -> ``(N, M)``.

    No ``+1`` on widths and heights (continuous coordinates), as TF ``np_box_ops.iou``.
    """
    b1 = np.asarray(boxes1, dtype=np.float64).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(b1[:, None, 2], b2[None, :, 2]) - np.maximum(b1[:, None, 0], b2[None, :, 0])
    ih = np.minimum(b1[:, None, 3], b2[None, :, 3]) - np.maximum(b1[:, None, 1], b2[None, :, 1])
    inter = np.maximum(iw, 0.0) * np.maximum(ih, 0.0)
    area1 = (b1[:, 2] - b1[:, 0]) * (b1[:, 3] - b1[:, 1])
    area2 = (b2[:, 2] - b2[:, 0]) * (b2[:, 3] - b2[:, 1])
    union = area1[:, None] + area2[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / union


def match_detections(
    det_boxes: np.ndarray, gt_boxes: np.ndarray, iou_threshold: float = 0.5
) -> np.ndarray:
    """True-positive flags of one class on one key frame.

    Args:
        det_boxes: ``(N, 4)`` detections ``x1, y1, x2, y2``, already in descending score order.
        gt_boxes: ``(M, 4)`` ground-truth boxes of the same class on the same key frame.
        iou_threshold: a detection whose argmax-IoU box has IoU ``>=`` this is a candidate.

    Returns:
        ``(N,)`` bool. Detection ``i`` is a TP iff its argmax-IoU ground-truth box ``j`` has
        ``IoU >= iou_threshold`` and no earlier detection already took ``j`` (the official
        greedy loop, vectorised: the first eligible detection pointing at ``j`` wins).
    """
    n = len(det_boxes)
    tp = np.zeros(n, dtype=bool)
    if n == 0 or len(gt_boxes) == 0:
        return tp
    iou = box_iou_xyxy(det_boxes, gt_boxes)
    best = np.argmax(iou, axis=1)
    eligible = np.flatnonzero(iou[np.arange(n), best] >= iou_threshold)
    _, first = np.unique(best[eligible], return_index=True)
    tp[eligible[first]] = True
    return tp


def precision_recall(
    scores: np.ndarray, tp: np.ndarray, num_gt: int
) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative precision and recall of detections ranked by descending score.

    Ties keep their input order (stable sort). The official ``np.argsort(scores)[::-1]`` leaves
    the order of tied scores to the sorting algorithm.
    """
    if num_gt <= 0:
        raise ValueError("precision/recall need num_gt > 0")
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp_sorted = np.asarray(tp, dtype=bool)[order]
    cum_tp = np.cumsum(tp_sorted, dtype=np.float64)
    cum_fp = np.cumsum(~tp_sorted, dtype=np.float64)
    return cum_tp / (cum_tp + cum_fp), cum_tp / num_gt


def voc_average_precision(precision: np.ndarray, recall: np.ndarray) -> float:
    """PASCAL VOC-devkit all-point AP (TF ``metrics.compute_average_precision``).

    Pads with ``(r=0, p=0)`` and ``(r=1, p=0)``, makes precision non-increasing from the right
    and sums ``(r_i - r_{i-1}) * p_i`` over the points where recall changes. Empty input -> 0.
    """
    precision = np.asarray(precision, dtype=np.float64)
    recall = np.asarray(recall, dtype=np.float64)
    if precision.shape != recall.shape or precision.ndim != 1:
        raise ValueError("precision and recall must be 1-D arrays of equal length")
    if precision.size == 0:
        return 0.0
    r = np.concatenate([[0.0], recall, [1.0]])
    p = np.concatenate([[0.0], precision, [0.0]])
    p = np.maximum.accumulate(p[::-1])[::-1]
    idx = np.flatnonzero(r[1:] != r[:-1]) + 1
    return float(np.sum((r[idx] - r[idx - 1]) * p[idx]))


def _keep_rows(cols: _Columns, mask: np.ndarray) -> _Columns:
    keys = [k for k, m in zip(cols.keys, mask, strict=True) if m]
    return _Columns(keys, cols.boxes[mask], cols.classes[mask], cols.scores[mask])


def _selected(cols: _Columns, classes: list[int], excluded: set[Key]) -> np.ndarray:
    not_excluded = np.array([k not in excluded for k in cols.keys], dtype=bool)
    return np.isin(cols.classes, classes) & not_excluded.reshape(-1)


def _cap_per_key(cols: _Columns, cap: int) -> _Columns:
    """Keep the ``cap`` highest-scoring rows of every key (the ActivityNet CLI uses 50)."""
    index: dict[Key, int] = {}
    key_ids = np.array([index.setdefault(k, len(index)) for k in cols.keys], dtype=np.int64)
    order = np.lexsort((-cols.scores, key_ids))  # stable: by key, then descending score
    rank = np.empty(len(order), dtype=np.int64)
    sorted_ids = key_ids[order]
    starts = np.r_[0, np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1]
    group_start = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    rank[order] = np.arange(len(order)) - group_start
    return _keep_rows(cols, rank < cap)


def ava_frame_map(
    groundtruth: Sequence[Sequence[object]],
    detections: Sequence[Sequence[object]],
    class_ids: Iterable[int] = AVA_V22_CLASS_IDS,
    excluded_keys: Iterable[tuple[str, int]] = (),
    iou_threshold: float = 0.5,
    max_detections_per_key: int | None = None,
) -> AVAMapResult:
    """Frame-level mAP of AVA action detections (official ActivityNet evaluator semantics).

    Args:
        groundtruth: rows ``(video_id, timestamp, x1, y1, x2, y2, class_id[, person_id])``.
            A person with k actions appears as k rows with the same box.
        detections: rows ``(video_id, timestamp, x1, y1, x2, y2, class_id, score)``: every box
            is submitted once per class with that class's score.
        class_ids: evaluated classes (whitelist); rows of other classes are ignored on both
            sides. Default: the 60 AVA v2.2 classes.
        excluded_keys: ``(video_id, timestamp)`` key frames dropped from both sides
            (``ava_val_excluded_timestamps_v2.2.csv``).
        iou_threshold: matching threshold (inclusive).
        max_detections_per_key: keep only this many highest-scoring detection rows (over all
            classes) per key frame. ``None`` (PySlowFast's in-process evaluation) keeps all; the
            ActivityNet ``get_ava_performance.py`` command line reads detections with 50.

    Returns:
        :class:`AVAMapResult` with the mAP, per-class AP and ground-truth counts.
    """
    classes = sorted({int(c) for c in class_ids})
    excluded = {(str(v), int(t)) for v, t in excluded_keys}
    gt = _to_columns(groundtruth, with_scores=False)
    det = _to_columns(detections, with_scores=True)
    gt = _keep_rows(gt, _selected(gt, classes, excluded))
    det = _keep_rows(det, _selected(det, classes, excluded))
    if max_detections_per_key is not None:
        det = _cap_per_key(det, max_detections_per_key)
    valid = (det.boxes[:, 0] < det.boxes[:, 2]) & (det.boxes[:, 1] < det.boxes[:, 3])
    det = _keep_rows(det, valid)
    broken = ~np.isfinite(det.scores)  # never right: first in the ranking, matched to nothing
    det = _Columns(det.keys, det.boxes, det.classes, np.where(broken, np.inf, det.scores))

    # Group rows by (key frame, class) with one integer id per group.
    key_index: dict[Key, int] = {}
    for k in det.keys + gt.keys:
        key_index.setdefault(k, len(key_index))
    class_pos = {c: i for i, c in enumerate(classes)}
    n_cls = len(classes)

    def group_ids(cols: _Columns) -> np.ndarray:
        kid = np.array([key_index[k] for k in cols.keys], dtype=np.int64)
        cid = np.array([class_pos[int(c)] for c in cols.classes], dtype=np.int64)
        return kid * n_cls + cid

    det_group, gt_group = group_ids(det), group_ids(gt)
    gt_order = np.argsort(gt_group, kind="stable")
    gt_sorted_groups = gt_group[gt_order]

    order = np.lexsort((-det.scores, det_group))  # by group, then descending score (stable)
    det_boxes, det_scores, det_group = det.boxes[order], det.scores[order], det_group[order]
    broken = broken[order]
    tp = np.zeros(len(order), dtype=bool)
    starts = np.flatnonzero(np.r_[True, det_group[1:] != det_group[:-1]]) if len(order) else []
    bounds = np.r_[starts, len(order)].astype(np.int64)
    for s, e in zip(bounds[:-1], bounds[1:], strict=True):
        g = det_group[s]
        lo, hi = np.searchsorted(gt_sorted_groups, [g, g + 1])
        if hi > lo:
            idx = s + np.flatnonzero(~broken[s:e])
            tp[idx] = match_detections(det_boxes[idx], gt.boxes[gt_order[lo:hi]], iou_threshold)

    det_class = det_group % n_cls if n_cls else det_group
    num_gt = np.bincount(gt_group % n_cls, minlength=n_cls) if n_cls else np.zeros(0, int)
    per_class_ap: dict[int, float] = {}
    for i, c in enumerate(classes):
        if num_gt[i] == 0:
            continue
        sel = det_class == i
        prec, rec = precision_recall(det_scores[sel], tp[sel], int(num_gt[i]))
        per_class_ap[c] = voc_average_precision(prec, rec)
    mean_ap = float(np.mean(list(per_class_ap.values()))) if per_class_ap else float("nan")
    return AVAMapResult(
        mean_ap=mean_ap,
        per_class_ap=per_class_ap,
        num_groundtruth={c: int(num_gt[i]) for i, c in enumerate(classes)},
    )


# --------------------------------------------------------------------------- file readers


def _read_rows(path: str | Path) -> list[tuple[int, list[str]]]:
    """(line number, fields) of the non-empty rows of a header-less CSV."""
    reader = csv.reader(io.StringIO(read_text_utf8(path), newline=""))
    return [(reader.line_num, row) for row in reader if row]


def _parse_rows(path: str | Path, widths: tuple[int, ...], what: str,
                parse: Callable[[list[str]], Any]) -> list[Any]:
    """``parse(row)`` of every row; :class:`DataFileError` naming the file and line for a row
    with another number of columns or a value that is not a number."""
    out = []
    for line, row in _read_rows(path):
        if len(row) not in widths:
            expected = " or ".join(map(str, widths))
            raise DataFileError(path, f"expected {expected} columns, got {row!r}", line)
        try:
            out.append(parse(row))
        except ValueError:
            raise DataFileError(path, f"expected {what}, got {row!r}", line) from None
    return out


def read_ava_groundtruth_csv(path: str | Path) -> list[AVARow]:
    """Read ``ava_{train,val}_v2.2.csv`` (no header).

    Returns rows ``(video_id, timestamp, x1, y1, x2, y2, action_id, person_id)``; ``person_id``
    is -1 when the file has only 7 columns.
    """
    return _parse_rows(
        path, (7, 8), "video_id, integer timestamp, 4 box numbers, integer action id[, person id]",
        lambda row: (row[0], int(row[1]), *map(float, row[2:6]), int(row[6]),
                     int(row[7]) if len(row) == 8 else -1))


def read_ava_detections_csv(path: str | Path) -> list[AVARow]:
    """Read a detection CSV: rows ``(video_id, timestamp, x1, y1, x2, y2, action_id, score)``.

    A 7-column row gets score 1.0, as in the official ``read_csv``.
    """
    return _parse_rows(
        path, (7, 8), "video_id, integer timestamp, 4 box numbers, integer action id[, score]",
        lambda row: (row[0], int(row[1]), *map(float, row[2:6]), int(row[6]),
                     float(row[7]) if len(row) == 8 else 1.0))


def read_ava_exclusions(path: str | Path) -> set[tuple[str, int]]:
    """Read ``ava_val_excluded_timestamps_v2.2.csv``: rows ``video_id,timestamp``."""
    return set(_parse_rows(path, (2,), "video_id, integer timestamp",
                           lambda row: (row[0], int(row[1]))))


_ITEM_RE = re.compile(r"item\s*\{(.*?)\}", re.DOTALL)
_NAME_RE = re.compile(r'\bname:\s*"([^"]*)"')
_ID_RE = re.compile(r"\b(?:label_)?id:\s*(\d+)")


def read_ava_label_map(path: str | Path) -> dict[int, str]:
    """Read an AVA label-map ``.pbtxt`` (``item { name: "..." id: N }`` blocks) -> ``{id: name}``.

    Accepts ``id`` or ``label_id`` like the official reader; the ids are the evaluated classes.
    """
    text = read_text_utf8(path)
    out: dict[int, str] = {}
    for block in _ITEM_RE.findall(text):
        name, cid = _NAME_RE.search(block), _ID_RE.search(block)
        if name is None or cid is None:
            raise ValueError(f"{path}: label-map item without name or id: {block.strip()!r}")
        out[int(cid.group(1))] = name.group(1)
    if not out:
        raise ValueError(f"{path}: no label-map items found")
    return out
