"""SiamFC on frozen features: correlation, crops and tracking with raw-pixel features."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from constcl.eval.metrics.tracking import center_error
from constcl.eval.track.siamfc import (
    SiamFCConfig,
    SiamFCTracker,
    crop_and_resize,
    cross_correlation,
    hann_window,
)


def test_cross_correlation_matches_naive_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 9, 11, generator=gen)
    z = torch.randn(4, 3, 5, generator=gen)
    out = cross_correlation(x, z)
    assert out.shape == (3, 7, 7)
    naive = torch.zeros(3, 7, 7)
    for b in range(3):
        for i in range(7):
            for j in range(7):
                naive[b, i, j] = (x[b, :, i : i + 3, j : j + 5] * z).sum()
    torch.testing.assert_close(out, naive, rtol=1e-5, atol=1e-5)


def test_cross_correlation_at_tracking_size_matches_direct_convolution() -> None:
    """The tracker's real shapes (3 scales, 32 x 32 search, 16 x 16 kernel, many channels),
    an odd-sized case and a kernel as large as the search (one output cell)."""
    gen = torch.Generator().manual_seed(1)
    for x_shape, z_shape in [((3, 64, 32, 32), (64, 16, 16)), ((2, 5, 13, 8), (5, 4, 7)),
                             ((1, 6, 5, 5), (6, 5, 5))]:
        x = torch.randn(*x_shape, generator=gen, dtype=torch.float64)
        z = torch.randn(*z_shape, generator=gen, dtype=torch.float64)
        direct = F.conv2d(x, z[None])[:, 0]
        torch.testing.assert_close(cross_correlation(x, z), direct)
        torch.testing.assert_close(cross_correlation(x.float(), z.float()), direct.float(),
                                   rtol=1e-4, atol=1e-3)
    with pytest.raises(ValueError, match="larger than search"):
        cross_correlation(torch.zeros(1, 2, 4, 4), torch.zeros(2, 5, 3))


def test_crop_pads_with_border_colour_and_keeps_centre() -> None:
    img = np.zeros((10, 10, 3), np.float32)
    img[4:6, 4:6] = 200.0
    border = np.array([7.0, 8.0, 9.0], np.float32)
    # side 4 around (4.5, 4.5): rows/cols 3..6, the bright 2x2 block in the middle
    crop = crop_and_resize(img, np.array([4.5, 4.5]), 4, 4, border)
    assert crop[1:3, 1:3].tolist() == [[[200.0] * 3] * 2] * 2
    assert crop[0, 0].tolist() == [0.0, 0.0, 0.0]
    # side 4 around the corner (0.5, 0.5): rows/cols -1..2, the first row/column is padding
    crop = crop_and_resize(img, np.array([0.5, 0.5]), 4, 4, border)
    assert crop[0, 0].tolist() == [7.0, 8.0, 9.0]
    assert crop[0, 3].tolist() == [7.0, 8.0, 9.0]
    assert crop[1, 1].tolist() == [0.0, 0.0, 0.0]


def test_hann_window_sums_to_one_and_peaks_in_the_middle() -> None:
    win = hann_window(17)
    assert win.sum() == pytest.approx(1.0)
    assert np.unravel_index(win.argmax(), win.shape) == (8, 8)


def _moving_square(frames: int = 24, size: int = 96, side: int = 16):
    """A bright square moving (2, 1) px per frame on a dark background; OTB boxes."""
    images, boxes = [], []
    for t in range(frames):
        img = np.full((size, size, 3), 20, np.uint8)
        x, y = 10 + 2 * t, 12 + t
        img[y : y + side, x : x + side] = 230
        images.append(img)
        boxes.append([x + 1, y + 1, side, side])  # 1-based top-left
    return images, np.array(boxes, dtype=float)


def test_tracks_square_with_raw_pixels_at_stride_8() -> None:
    """Raw pixels averaged over 8x8 cells (stride 8, like the network) and default settings."""
    images, gt = _moving_square()
    tracker = SiamFCTracker(lambda x: F.avg_pool2d(x, 8), stride=8)
    boxes, times = tracker.track(images, gt[0])
    assert boxes.shape == gt.shape and times.shape == (len(gt),)
    assert center_error(boxes, gt).max() < 2.0
    np.testing.assert_allclose(boxes[:, 2:], gt[:, 2:], rtol=0.05)


def test_tracks_square_with_identity_features() -> None:
    """The identity feature extractor (stride 1), with smaller crops to keep it fast."""
    images, gt = _moving_square(frames=12)
    cfg = SiamFCConfig(exemplar_sz=31, instance_sz=63, response_up=4)
    boxes, _ = SiamFCTracker(lambda x: x, stride=1, cfg=cfg).track(images, gt[0])
    assert center_error(boxes, gt).max() < 1.5


def test_still_image_does_not_drift() -> None:
    images, gt = _moving_square(frames=1)
    boxes, _ = SiamFCTracker(lambda x: F.avg_pool2d(x, 8), stride=8).track(images * 8, gt[0])
    assert center_error(boxes, np.repeat(gt, 8, axis=0)).max() < 1.0


def test_rejects_even_scale_count() -> None:
    with pytest.raises(ValueError, match="odd"):
        SiamFCTracker(lambda x: x, 1, SiamFCConfig(scale_num=2))
