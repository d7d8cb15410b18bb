"""DAVIS J and F: hand-computed masks, conventions, and a pure-Python loop reference for F."""

from __future__ import annotations

import math

import numpy as np
import pytest

from constcl.eval.metrics.davis import (
    boundary_f_measure,
    boundary_radius,
    db_statistics,
    evaluate_sequence,
    region_similarity,
    seg2bmap,
    summarize,
)


def _square(shape, y0, y1, x0, x1):
    m = np.zeros(shape, dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_j_hand_computed() -> None:
    gt = _square((4, 4), 0, 2, 0, 2)  # 4 pixels
    pred = _square((4, 4), 0, 2, 0, 3)  # 6 pixels, 4 shared
    assert region_similarity(gt, pred) == pytest.approx(4 / 6)
    empty = np.zeros((4, 4), dtype=bool)
    assert region_similarity(empty, empty) == 1.0  # empty union
    assert region_similarity(gt, empty) == 0.0
    # Void pixels are ignored when given: hide the two extra predicted pixels.
    void = _square((4, 4), 0, 2, 2, 3)
    assert region_similarity(gt, pred, void) == 1.0
    # Batched over frames.
    batched = region_similarity(np.stack([gt, gt]), np.stack([pred, gt]))
    np.testing.assert_allclose(batched, [4 / 6, 1])


def test_seg2bmap_hand_computed() -> None:
    # A pixel is boundary if it differs from its E, S or SE neighbour (last row: E only, last
    # column: S only, bottom-right never); the ring sits half a pixel towards the origin.
    expected = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        dtype=bool,
    )
    np.testing.assert_array_equal(seg2bmap(_square((4, 4), 1, 3, 1, 3)), expected)


def test_f_hand_computed() -> None:
    gt = _square((4, 4), 1, 3, 1, 3)  # boundary: the 8 pixels above
    pred = _square((4, 4), 1, 2, 1, 2)  # one pixel: boundary (0,0) (0,1) (1,0) (1,1)
    assert boundary_radius(gt.shape) == 1  # ceil(0.008 * sqrt(32))
    # Radius-1 disk = the pixel and its 4 neighbours. All 4 predicted boundary pixels touch the
    # GT boundary (P = 1); GT boundary pixel (2,2) has no predicted neighbour (R = 7/8).
    # F = 2 * 1 * 7/8 / (1 + 7/8) = 14/15.
    assert boundary_f_measure(gt, pred) == pytest.approx(14 / 15)


def test_f_empty_conventions() -> None:
    empty = np.zeros((6, 6), dtype=bool)
    sq = _square((6, 6), 1, 4, 1, 4)
    assert boundary_f_measure(empty, empty) == 1.0  # P = R = 1
    assert boundary_f_measure(sq, empty) == 0.0  # P = 1, R = 0
    assert boundary_f_measure(empty, sq) == 0.0  # P = 0, R = 1
    assert boundary_f_measure(sq, sq) == 1.0


def test_radius_uses_image_diagonal() -> None:
    assert boundary_radius((480, 854)) == 8  # ceil(0.008 * 979.7)
    assert boundary_radius((480, 854), bound_th=3) == 3


def _naive_f(gt, pred, bound_th):
    """F with explicit loops: boundary by definition, matching by Euclidean distance <= r."""
    h, w = gt.shape

    def bmap(m):
        out = set()
        for y in range(h):
            for x in range(w):
                if y < h - 1 and x < w - 1:  # interior: east, south, south-east
                    nbrs = [m[y][x + 1], m[y + 1][x], m[y + 1][x + 1]]
                elif y == h - 1 and x < w - 1:  # last row: east only
                    nbrs = [m[y][x + 1]]
                elif x == w - 1 and y < h - 1:  # last column: south only
                    nbrs = [m[y + 1][x]]
                else:  # bottom-right corner: never a boundary
                    nbrs = []
                if any(n != m[y][x] for n in nbrs):
                    out.add((y, x))
        return out

    r = math.ceil(bound_th * math.hypot(h, w)) if bound_th < 1 else bound_th
    bg, bp = bmap(gt.tolist()), bmap(pred.tolist())

    def matched(src, dst):
        return sum(any((y - v) ** 2 + (x - u) ** 2 <= r * r for v, u in dst) for y, x in src)

    if not bp and not bg:
        p = rec = 1.0
    elif not bp:
        p, rec = 1.0, 0.0
    elif not bg:
        p, rec = 0.0, 1.0
    else:
        p, rec = matched(bp, bg) / len(bp), matched(bg, bp) / len(bg)
    return 0.0 if p + rec == 0 else 2 * p * rec / (p + rec)


@pytest.mark.parametrize("seed", range(6))
def test_f_agrees_with_loop_reference(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = rng.integers(12, 30, size=2)
    gt = _square((h, w), *sorted(rng.integers(0, h, 2)), *sorted(rng.integers(0, w, 2)))
    gt |= rng.uniform(size=(h, w)) < 0.05  # speckle
    pred = np.roll(gt, tuple(rng.integers(-3, 4, size=2)), axis=(0, 1))
    pred ^= rng.uniform(size=(h, w)) < 0.05
    for bound_th in (0.008, 0.08, 2):
        assert boundary_f_measure(gt, pred, bound_th=bound_th) == pytest.approx(
            _naive_f(gt, pred, bound_th)
        )


def test_db_statistics_hand_computed() -> None:
    v = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    # Bin edges round(linspace(1, 8, 5)) - 1 = 0, 2, 4, 5, 7 (inclusive): first bin
    # 0.9 0.8 0.7 (mean 0.8), last bin 0.4 0.3 0.2 (mean 0.3).
    mean, recall, decay = db_statistics(v)
    assert mean == pytest.approx(0.55)
    assert recall == pytest.approx(4 / 8)  # 0.5 itself is not > 0.5
    assert decay == pytest.approx(0.5)


def test_sequence_drops_first_last_and_void_convention() -> None:
    t, h, w = 6, 20, 20
    gt = np.zeros((t, h, w), dtype=np.uint8)
    gt[:, 2:8, 2:8] = 1
    gt[:, 10:16, 10:16] = 2
    pred = gt.copy()
    pred[0] = 0  # first and last frames are not scored
    pred[-1] = 2
    j, f = evaluate_sequence(gt, pred)
    assert j.shape == f.shape == (2, t - 2)
    assert np.all(j == 1) and np.all(f == 1)
    # Void pixels (255) in the GT count as background unless ignore_void=True.
    gt_void, pred_void = gt.copy(), pred.copy()
    gt_void[:, 2:8, 8:10] = 255
    pred_void[:, 2:8, 8:10] = 1
    j, _ = evaluate_sequence(gt_void, pred_void)
    np.testing.assert_allclose(j[0], 36 / 48)
    j, f = evaluate_sequence(gt_void, pred_void, ignore_void=True)
    assert np.all(j == 1) and np.all(f == 1)
    with pytest.raises(ValueError, match="id 3"):
        evaluate_sequence(gt, np.where(pred == 2, 3, pred))


def test_summary_is_object_averaged() -> None:
    ones, zeros = np.ones((1, 4)), np.zeros((1, 4))
    two = np.vstack([ones, ones])
    summary = summarize({"a": (two, two), "b": (zeros, zeros)})
    assert summary.measures["J-Mean"] == pytest.approx(2 / 3)  # sequence mean would be 1/2
    assert summary.measures["J&F-Mean"] == pytest.approx(2 / 3)
    assert summary.measures["J-Recall"] == pytest.approx(2 / 3)
    assert summary.measures["J-Decay"] == 0.0
    assert summary.per_object == {"a_1": (1.0, 1.0), "a_2": (1.0, 1.0), "b_1": (0.0, 0.0)}
