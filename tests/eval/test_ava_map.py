"""AVA frame-mAP: hand-computed cases, file readers, and an independent loop reference."""

from __future__ import annotations

import numpy as np
import pytest

from constcl.eval.metrics.ava_map import (
    AVA_V22_CLASS_IDS,
    ava_frame_map,
    read_ava_detections_csv,
    read_ava_exclusions,
    read_ava_groundtruth_csv,
    read_ava_label_map,
    voc_average_precision,
)

G1 = (0.0, 0.0, 0.5, 0.5)
G2 = (0.5, 0.5, 1.0, 1.0)

# Class 1: three GT boxes on two key frames.
HAND_GT = [
    ("a", 902, *G1, 1, 0),
    ("a", 902, *G2, 1, 1),
    ("b", 903, *G1, 1, 0),
    ("a", 902, *G1, 3, 0),  # class 3: GT but no detection -> AP 0
    ("a", 902, *G1, 2, 0),  # class 2 is not evaluated
]
HAND_DET = [
    ("a", 902, *G1, 1, 0.9),  # IoU 1 with G1 -> TP
    ("a", 902, *G1, 1, 0.8),  # argmax G1 again, already matched -> FP
    ("b", 903, 0.0, 0.0, 0.5, 0.4, 1, 0.7),  # IoU 0.2/0.25 = 0.8 -> TP
    ("c", 904, *G1, 1, 0.6),  # key frame without any GT -> FP
    ("a", 902, 0.5, 0.5, 1.0, 0.75, 1, 0.5),  # IoU 0.125/0.25 = 0.5 exactly -> TP (>=)
    ("a", 902, *G1, 4, 0.99),  # class 4 has no GT -> left out of the mean
]
# Ranked TP FP TP FP TP with 3 GT: precision 1, 1/2, 2/3, 2/4, 3/5 at recall 1/3, 1/3, 2/3,
# 2/3, 1. Envelope from the right: 1, 2/3, 2/3, 0.6, 0.6. Recall steps of 1/3 at precision
# 1, 2/3 and 0.6: AP = 1/3 + 2/9 + 1/5 = 34/45.
HAND_AP1 = 34 / 45


def test_hand_computed_ranked_list() -> None:
    res = ava_frame_map(HAND_GT, HAND_DET, class_ids=[1, 3, 4])
    assert res.per_class_ap[1] == pytest.approx(HAND_AP1)
    assert res.per_class_ap[3] == 0.0
    assert 4 not in res.per_class_ap
    assert res.num_groundtruth == {1: 3, 3: 1, 4: 0}
    assert res.mean_ap == pytest.approx((HAND_AP1 + 0.0) / 2)


def test_row_order_and_pixel_scale_do_not_matter() -> None:
    rng = np.random.default_rng(0)
    det = [HAND_DET[i] for i in rng.permutation(len(HAND_DET))]

    def scale(rows):
        return [(r[0], r[1], r[2] * 640, r[3] * 360, r[4] * 640, r[5] * 360, *r[6:]) for r in rows]

    res = ava_frame_map(scale(HAND_GT), scale(det), class_ids=[1])
    assert res.per_class_ap[1] == pytest.approx(HAND_AP1)


def test_only_argmax_gt_is_tried() -> None:
    x, y = (0.0, 0.0, 10.0, 1.0), (2.0, 0.0, 12.0, 1.0)
    gt = [("v", 1000, *x, 1), ("v", 1000, *y, 1)]
    # d2: IoU 9.5/10.5 with x (argmax, already taken by d1), 8.5/11.5 = 0.74 with y -> FP.
    det = [("v", 1000, *x, 1, 0.9), ("v", 1000, 0.5, 0.0, 10.5, 1.0, 1, 0.8)]
    # TP, FP with 2 GT: precision 1 at recall 1/2 -> AP 0.5 (it would be 1 with fall-back).
    assert ava_frame_map(gt, det, class_ids=[1]).per_class_ap[1] == pytest.approx(0.5)


def test_matching_follows_score_not_row_order() -> None:
    gt = [("v", 1000, *G1, 1)]
    near = (0.0, 0.0, 0.5, 0.3)  # IoU 0.6
    # Listed first but scored lower: the 0.9 detection takes the GT, this one is FP.
    det = [("v", 1000, *near, 1, 0.2), ("v", 1000, *G1, 1, 0.9)]
    assert ava_frame_map(gt, det, class_ids=[1]).per_class_ap[1] == pytest.approx(1.0)


def test_below_threshold_excluded_keys_invalid_boxes_and_cap() -> None:
    gt = [("v", 1000, *G1, 1), ("w", 1001, *G1, 1)]
    below = (0.0, 0.0, 0.5, 0.24)  # IoU 0.48
    det = [("v", 1000, *below, 1, 0.9), ("w", 1001, *G1, 1, 0.8)]
    # FP then TP with 2 GT: precision 1/2 at recall 1/2 -> AP 0.25.
    assert ava_frame_map(gt, det, class_ids=[1]).per_class_ap[1] == pytest.approx(0.25)
    # Excluding key v drops its GT and its FP: one GT, one TP.
    res = ava_frame_map(gt, det, class_ids=[1], excluded_keys=[("v", 1000)])
    assert res.per_class_ap[1] == pytest.approx(1.0)
    assert res.num_groundtruth[1] == 1
    # A degenerate detection (x2 <= x1) is dropped, not counted as a false positive.
    bad = [("w", 1001, 0.5, 0.0, 0.5, 0.5, 1, 0.99)]
    res = ava_frame_map(gt, det + bad, class_ids=[1])
    assert res.per_class_ap[1] == pytest.approx(0.25)
    # Capping key w at one row keeps its 0.95 row of class 2, so the class-1 TP is lost.
    other = [("w", 1001, *G1, 2, 0.95)]
    res = ava_frame_map(gt, det + other, class_ids=[1, 2], max_detections_per_key=1)
    assert res.per_class_ap[1] == pytest.approx(0.0)


def test_timestamps_are_cast_like_make_image_key() -> None:
    gt = [("v", "0902", *G1, 1)]
    det = [("v", 902.0, *G1, 1, 0.5)]
    assert ava_frame_map(gt, det, class_ids=[1]).mean_ap == pytest.approx(1.0)


def test_no_groundtruth_gives_nan() -> None:
    res = ava_frame_map([], [("v", 1, *G1, 1, 0.5)], class_ids=[1])
    assert np.isnan(res.mean_ap) and res.per_class_ap == {}


def test_voc_ap_edge_cases() -> None:
    assert voc_average_precision(np.array([]), np.array([])) == 0.0
    # A single TP at recall 0.5: area 0.5.
    assert voc_average_precision(np.array([1.0]), np.array([0.5])) == pytest.approx(0.5)


def test_class_list_constant() -> None:
    excluded = {2, 16, 18, 19, 21, 23, 25, 31, 32, 33, 35, 39, 40, 42, 44, 50, 53, 55, 71, 75}
    assert len(AVA_V22_CLASS_IDS) == 60
    assert set(AVA_V22_CLASS_IDS) == set(range(1, 81)) - excluded


# ------------------------------------------------------------------------ readers


def test_readers_and_end_to_end(tmp_path) -> None:
    gt_csv = tmp_path / "ava_val_v2.2.csv"
    det_csv = tmp_path / "det.csv"
    excl_csv = tmp_path / "excluded.csv"
    pbtxt = tmp_path / "labels.pbtxt"
    gt_csv.write_text(
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,1\n"
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,12,1\n"
        "-5KQ66BBWC4,0903,0.100,0.100,0.300,0.800,12,2\n"
    )
    det_csv.write_text(
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,80,0.7\n"
        "-5KQ66BBWC4,0902,0.077,0.151,0.283,0.811,12,0.4\n"
        "-5KQ66BBWC4,0903,0.100,0.100,0.300,0.800,12\n"
    )
    excl_csv.write_text("-5KQ66BBWC4,0903\n")
    pbtxt.write_text(
        'item {\n  name: "stand"\n  id: 12\n}\n'
        'item {\n  name: "watch (a person)"\n  label_id: 80\n  label_type: PERSON_INTERACTION\n}\n'
    )
    gt = read_ava_groundtruth_csv(gt_csv)
    det = read_ava_detections_csv(det_csv)
    assert gt[0] == ("-5KQ66BBWC4", 902, 0.077, 0.151, 0.283, 0.811, 80, 1)
    assert det[2][-1] == 1.0  # 7 columns -> score 1.0
    labels = read_ava_label_map(pbtxt)
    assert labels == {12: "stand", 80: "watch (a person)"}
    assert read_ava_exclusions(excl_csv) == {("-5KQ66BBWC4", 903)}
    res = ava_frame_map(gt, det, class_ids=labels, excluded_keys=read_ava_exclusions(excl_csv))
    assert res.per_class_ap == {12: pytest.approx(1.0), 80: pytest.approx(1.0)}


def test_reader_rejects_bad_rows(tmp_path) -> None:
    p = tmp_path / "bad.csv"
    p.write_text("v,0902,0.1,0.1,0.2\n")
    with pytest.raises(ValueError, match="columns"):
        read_ava_groundtruth_csv(p)


# ------------------------------------------------------------------ independent reference


def _reference_map(gt, det, classes, thr=0.5):
    """Straightforward transcription of the official loops (no vectorisation)."""

    def iou(a, b):
        iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = iw * ih
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    aps = {}
    for c in classes:
        gts = [r for r in gt if r[6] == c]
        if not gts:
            continue
        results = []  # (score, is_tp)
        keys = {(r[0], r[1]) for r in det if r[6] == c}
        for key in keys:
            ds = sorted([r for r in det if r[6] == c and (r[0], r[1]) == key], key=lambda r: -r[7])
            gs = [r[2:6] for r in gts if (r[0], r[1]) == key]
            used = [False] * len(gs)
            for d in ds:
                if not gs:
                    results.append((d[7], False))
                    continue
                ious = [iou(d[2:6], g) for g in gs]
                j = int(np.argmax(ious))
                hit = ious[j] >= thr and not used[j]
                if hit:
                    used[j] = True
                results.append((d[7], hit))
        results.sort(key=lambda t: -t[0])
        tp = fp = 0
        prec, rec = [], []
        for _, hit in results:
            tp, fp = tp + hit, fp + (not hit)
            prec.append(tp / (tp + fp))
            rec.append(tp / len(gts))
        r = [0.0] + rec + [1.0]
        p = [0.0] + prec + [0.0]
        for i in range(len(p) - 2, -1, -1):
            p[i] = max(p[i], p[i + 1])
        aps[c] = sum((r[i] - r[i - 1]) * p[i] for i in range(1, len(r)) if r[i] != r[i - 1])
    return aps


def _random_boxes(rng, n):
    xy = rng.uniform(0, 0.6, size=(n, 2))
    wh = rng.uniform(0.1, 0.4, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


@pytest.mark.parametrize("seed", range(5))
def test_agrees_with_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    classes = [1, 3, 5, 7]
    keys = [(f"vid{v}", t) for v in range(3) for t in range(902, 906)]
    gt, det = [], []
    for key in keys:
        people = _random_boxes(rng, rng.integers(0, 4))
        for box in people:
            for c in rng.choice(classes, size=rng.integers(1, 3), replace=False):
                gt.append((*key, *box, int(c), 0))
        # detections: jittered copies of the people plus spurious boxes, every class scored
        jitter = people + rng.normal(0, 0.05, size=people.shape)
        for box in np.concatenate([jitter, _random_boxes(rng, rng.integers(0, 3))]):
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            for c in classes:
                det.append((*key, *box, c, float(rng.uniform())))
    expected = _reference_map(gt, det, classes)
    res = ava_frame_map(gt, det, class_ids=classes)
    assert res.per_class_ap.keys() == expected.keys()
    for c in expected:
        assert res.per_class_ap[c] == pytest.approx(expected[c], abs=1e-12)
    assert res.mean_ap == pytest.approx(np.mean(list(expected.values())), abs=1e-12)
