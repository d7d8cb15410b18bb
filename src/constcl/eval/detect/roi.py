"""RoI features of boxes on a clip's res5 map: the feature half of PySlowFast's
``ResNetRoIHead`` (docs/evaluation.md section 2.4), without its dropout and projection.

1. Average the res5 map over its **whole temporal axis** (``AvgPool3d([T, 1, 1])``).
2. ``torchvision.ops.roi_align`` with output ``7 x 7``, ``sampling_ratio=0`` (adaptive: ceil of
   the bin size samples per bin, averaged) and ``aligned=True`` (box corners are continuous
   pixel coordinates, shifted by -0.5 so that pixel *centres* sit at integers on the map; the
   PySlowFast default ``DETECTION.ALIGNED = True``).
3. Spatial max over the 7 x 7 bins (``MaxPool2d``) -> one ``C``-vector per box.

**Spatial scale.** Our R3D keeps stride 2 in res5 (no dilation), so its res5 map has stride 32
(PySlowFast dilates res5 to stride 16). The default ``spatial_scale`` is therefore ``1/32``: a
box corner at input pixel ``x`` lands at ``x / 32`` on the map. This is exact when the input
side is a multiple of 32 (e.g. 64, 224, 256); use such sizes.

Boxes are ``(K, 5)`` rows ``(batch_index, x1, y1, x2, y2)`` in pixels of the network input
(the resized key frame), ``(0, 0)`` at the top left.
"""

from __future__ import annotations

import torch
from torchvision.ops import roi_align

__all__ = ["RES5_STRIDE", "detection_roi_features", "boxes_to_rois"]

RES5_STRIDE = 32


def boxes_to_rois(boxes: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
    """Per-clip normalised ``(K_b, 4)`` boxes -> ``(sum K_b, 5)`` RoIs in input pixels."""
    rows = []
    for b, bx in enumerate(boxes):
        scale = bx.new_tensor([width, height, width, height])
        rows.append(torch.cat([bx.new_full((len(bx), 1), float(b)), bx * scale], dim=1))
    return torch.cat(rows) if rows else torch.zeros(0, 5)


def detection_roi_features(res5: torch.Tensor, rois: torch.Tensor, output_size: int = 7,
                 spatial_scale: float = 1.0 / RES5_STRIDE, aligned: bool = True) -> torch.Tensor:
    """RoIAlign + max pooling on the temporally averaged map.

    Args:
        res5: ``(B, C, T, h, w)`` feature maps.
        rois: ``(K, 5)`` ``(batch_index, x1, y1, x2, y2)`` in input pixels.
        output_size: RoIAlign bins per side (PySlowFast ``ROI_XFORM_RESOLUTION = 7``).
        spatial_scale: map cells per input pixel.
        aligned: the half-pixel shift of ``roi_align``.

    Returns:
        ``(K, C)``.
    """
    assert res5.ndim == 5, f"expected (B, C, T, h, w), got {tuple(res5.shape)}"
    assert rois.ndim == 2 and rois.shape[1] == 5, f"expected (K, 5) rois, got {tuple(rois.shape)}"
    pooled = res5.mean(dim=2)  # (B, C, h, w)
    regions = roi_align(pooled, rois.to(pooled.dtype), output_size=output_size,
                        spatial_scale=spatial_scale, sampling_ratio=0, aligned=aligned)
    return regions.amax(dim=(2, 3))  # (K, C)
