"""Rendering a scene to RGB frames and instance label maps, and the exact visible boxes.

Objects are painted back to front with hard (aliased) edges, so the label map says exactly
which object owns each pixel after occlusion; masks, boxes and pixels agree by construction.
"""

from __future__ import annotations

import numpy as np

from constcl.data.synth.appearance import EXTENT, TEXTURE_SIZE, shape_mask
from constcl.data.synth.scene import ObjectTrack, Scene

SHADING = 0.25  # darkening towards an object's rim, for a little 3-D look


def _paint(obj: ObjectTrack, t: int, frame: np.ndarray, labels: np.ndarray) -> None:
    """Paint object ``obj`` at frame ``t`` over ``frame`` (float RGB) and ``labels`` in place."""
    size = frame.shape[0]
    x, y, angle, scale = obj.poses[t]
    radius = obj.radius * scale
    reach = EXTENT * radius + 1.0
    x0, x1 = max(int(x - reach), 0), min(int(x + reach) + 2, size)
    y0, y1 = max(int(y - reach), 0), min(int(y + reach) + 2, size)
    if x0 >= x1 or y0 >= y1:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) + 0.5 - x)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) + 0.5 - y)[:, None]
    c, s = np.float32(np.cos(angle) / radius), np.float32(np.sin(angle) / radius)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    inside = shape_mask(obj.shape, u, v)
    if not inside.any():
        return
    u, v = u[inside], v[inside]
    scale_tex = (TEXTURE_SIZE - 1) / 2.0
    iu = np.clip(np.rint((u + 1.0) * scale_tex), 0, TEXTURE_SIZE - 1).astype(np.intp)
    iv = np.clip(np.rint((v + 1.0) * scale_tex), 0, TEXTURE_SIZE - 1).astype(np.intp)
    weight = obj.texture[iv, iu][:, None]
    c0, c1 = obj.colours[t]
    shade = 1.0 - SHADING * np.minimum(u * u + v * v, 1.0)[:, None]
    frame[y0:y1, x0:x1][inside] = (c0 + (c1 - c0) * weight) * shade
    labels[y0:y1, x0:x1][inside] = obj.track_id


def render(scene: Scene) -> tuple[np.ndarray, np.ndarray]:
    """Render ``scene`` to ``(frames, H, W, 3)`` uint8 RGB and ``(frames, H, W)`` uint8 labels.

    Label 0 is background and ``k`` the object with track id ``k`` (the DAVIS convention).
    """
    size, count = scene.size, scene.frames
    rgb = np.empty((count, size, size, 3), dtype=np.uint8)
    labels = np.zeros((count, size, size), dtype=np.uint8)
    back_to_front = sorted(scene.objects, key=lambda o: -o.depth)
    for t in range(count):
        r, c = scene.pan[t]
        frame = scene.background[r : r + size, c : c + size].copy()
        for obj in back_to_front:
            _paint(obj, t, frame, labels[t])
        rgb[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return rgb, labels


def visible_boxes(labels: np.ndarray, num_objects: int) -> tuple[np.ndarray, np.ndarray]:
    """Tight boxes of every object's visible pixels, and the visible pixel counts.

    Returns ``boxes`` ``(frames, num_objects, 4)`` int64 as ``x1, y1, x2, y2`` in pixel edges
    (``x2``/``y2`` exclusive, so ``x2 - x1`` is the width in pixels; all 0 when the object is
    not visible) and ``pixels`` ``(frames, num_objects)``. Column ``k - 1`` is track id ``k``.
    """
    frames = labels.shape[0]
    boxes = np.zeros((frames, num_objects, 4), dtype=np.int64)
    pixels = np.zeros((frames, num_objects), dtype=np.int64)
    for t in range(frames):
        for k in range(num_objects):
            mask = labels[t] == k + 1
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if rows.size == 0:
                continue
            pixels[t, k] = int(mask.sum())
            boxes[t, k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return boxes, pixels
