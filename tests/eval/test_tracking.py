"""OTB one-pass evaluation: a hand-computed trajectory, conventions, and agreement with got10k."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from constcl.eval.metrics.tracking import (
    average_over_sequences,
    center_error,
    evaluate_ope,
    evaluate_sequence,
    plot_ope_curves,
    rect_iou,
)

GT = np.tile([10.0, 10.0, 20.0, 20.0], (5, 1))
PRED = np.array(
    [
        [500.0, 500.0, 5.0, 5.0],  # frame 1 is replaced by the ground truth
        [10.0, 10.0, 20.0, 20.0],  # exact: IoU 1, error 0
        [15.0, 10.0, 20.0, 20.0],  # 5 px right: IoU 300/500 = 0.6, error 5
        [40.0, 10.0, 20.0, 20.0],  # 30 px right: no overlap, error 30
        [22.0, 26.0, 20.0, 20.0],  # (12, 16) off: error 20, IoU 8*4/(800-32) = 1/24
    ]
)


def test_hand_computed_trajectory() -> None:
    res = evaluate_sequence(PRED, GT)
    # errors 0, 0, 5, 30, 20 with "<=": 2/5 up to 4 px, 3/5 up to 19, 4/5 up to 29, then 1.
    expected_prec = np.array([2] * 5 + [3] * 15 + [4] * 10 + [5] * 21) / 5
    np.testing.assert_allclose(res.precision_curve, expected_prec)
    assert res.precision_score == pytest.approx(4 / 5)  # error exactly 20 px counts
    # IoUs 1, 1, 0.6, 1/24, 0 with strict ">" on 0, 0.05, ..., 1:
    # t = 0: 4 frames; t = 0.05..0.55 (11 values): 3; t = 0.6..0.95 (8 values): 2; t = 1: 0.
    expected_succ = np.array([4] + [3] * 11 + [2] * 8 + [0]) / 5
    np.testing.assert_allclose(res.success_curve, expected_succ)
    assert res.success_score == pytest.approx((4 + 33 + 16) / 105)
    assert res.success_rate == pytest.approx(3 / 5)
    assert res.num_frames == 5


def test_perfect_tracker_scores_20_over_21() -> None:
    res = evaluate_sequence(GT, GT)
    assert res.success_score == pytest.approx(20 / 21)
    assert res.precision_score == 1.0


def test_first_frame_optionally_kept() -> None:
    res = evaluate_sequence(PRED, GT, first_frame_is_gt=False)
    assert res.precision_curve[-1] == pytest.approx(4 / 5)  # frame 1 is now a miss


def test_box_conventions() -> None:
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    # No +1: boxes sharing an edge do not overlap; half overlap is 50 / 150.
    assert rect_iou(a, np.array([[10.0, 0.0, 10.0, 10.0]]))[0] == 0.0
    assert rect_iou(a, np.array([[5.0, 0.0, 10.0, 10.0]]))[0] == pytest.approx(50 / 150)
    # Zero-area boxes: IoU 0 (eps in the union), no NaN.
    assert rect_iou(np.zeros((1, 4)), np.zeros((1, 4)))[0] == 0.0
    # Centre xy + (wh - 1) / 2: (4.5, 4.5) vs (5, 4.5) for a 11-wide box at 0.
    assert center_error(a, np.array([[0.0, 0.0, 11.0, 10.0]]))[0] == pytest.approx(0.5)


def test_nan_prediction_fails_and_absent_frames() -> None:
    pred = GT.copy()
    pred[2] = np.nan
    res = evaluate_sequence(pred, GT)
    assert res.precision_curve[-1] == pytest.approx(4 / 5)
    assert res.success_curve[0] == pytest.approx(4 / 5)
    gt = GT.copy()
    gt[3] = [np.nan, np.nan, np.nan, np.nan]
    gt[4, 2] = 0.0
    counted = evaluate_sequence(GT, gt)
    assert counted.success_curve[0] == pytest.approx(3 / 5)
    dropped = evaluate_sequence(GT, gt, exclude_absent=True)
    assert dropped.num_frames == 3 and dropped.success_curve[0] == 1.0


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="predicted boxes"):
        evaluate_sequence(PRED[:4], GT)


def test_sequence_average_is_not_frame_pooled() -> None:
    gt_a, gt_b = GT[:2], GT[:4]
    miss = np.tile([200.0, 200.0, 20.0, 20.0], (4, 1))
    per_seq, avg = evaluate_ope({"A": gt_a, "B": miss}, {"A": gt_a, "B": gt_b})
    assert per_seq["A"].precision_score == 1.0
    assert per_seq["B"].precision_score == pytest.approx(1 / 4)  # only the first frame
    assert avg.precision_score == pytest.approx((1 + 1 / 4) / 2)  # pooled would be 3/6
    assert avg.num_frames == 6
    with pytest.raises(ValueError, match="no predictions"):
        evaluate_ope({"A": gt_a}, {"A": gt_a, "B": gt_b})


def test_plots_are_written(tmp_path) -> None:
    _, avg = evaluate_ope({"s": PRED}, {"s": GT})
    perfect = average_over_sequences({"s": evaluate_sequence(GT, GT)})
    prec_png, succ_png = plot_ope_curves({"ours": avg, "oracle": perfect}, tmp_path)
    for path in (prec_png, succ_png):
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 100
    assert {prec_png.name, succ_png.name} == {"precision_plots.png", "success_plots.png"}


# ------------------------------------------------------------------------ got10k agreement


def _random_sequence(rng, n):
    gt = np.concatenate([rng.uniform(0, 300, (n, 2)), rng.uniform(5, 80, (n, 2))], axis=1)
    pred = gt + rng.normal(0, 15, size=(n, 4))
    pred[rng.uniform(size=n) < 0.1, 2] = 0.0  # some degenerate predictions
    return pred, gt


def test_agrees_with_got10k() -> None:
    # dev extra: a missing got10k must fail, not skip
    import got10k.experiments.otb as otb
    import got10k.utils.metrics as metrics

    exp = otb.ExperimentOTB.__new__(otb.ExperimentOTB)  # no dataset download
    exp.nbins_iou, exp.nbins_ce = 21, 51
    rng = np.random.default_rng(0)
    preds, gts = {}, {}
    succ_curves, prec_curves = [], []
    for s in range(6):
        pred, gt = _random_sequence(rng, int(rng.integers(20, 120)))
        preds[f"seq{s}"], gts[f"seq{s}"] = pred, gt
        np.testing.assert_allclose(rect_iou(pred, gt), metrics.rect_iou(pred, gt), atol=1e-12)
        np.testing.assert_allclose(center_error(pred, gt), metrics.center_error(pred, gt))
        boxes = pred.copy()
        boxes[0] = gt[0]  # as ExperimentOTB.report
        succ, prec = exp._calc_curves(*exp._calc_metrics(boxes, gt))
        succ_curves.append(succ)
        prec_curves.append(prec)
    per_seq, avg = evaluate_ope(preds, gts)
    for s, name in enumerate(per_seq):
        np.testing.assert_allclose(per_seq[name].success_curve, succ_curves[s])
        np.testing.assert_allclose(per_seq[name].precision_curve, prec_curves[s])
    succ, prec = np.mean(succ_curves, axis=0), np.mean(prec_curves, axis=0)
    assert avg.success_score == pytest.approx(np.mean(succ))
    assert avg.precision_score == pytest.approx(prec[20])
    assert avg.success_rate == pytest.approx(succ[21 // 2])
