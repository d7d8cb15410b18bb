"""Overlay images: frames with their object masks drawn in palette colours.

``overlay(frame, labels, palette)`` blends each object's colour into its pixels;
``save_overlay_grid`` writes one PNG per sequence: a row of predicted-mask overlays over a row of
ground-truth overlays, for a few frames, each panel captioned with its frame index.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def overlay(frame: np.ndarray, labels: np.ndarray, palette: Sequence[int],
            alpha: float = 0.55) -> np.ndarray:
    """``(H, W, 3)`` uint8 frame, ``(H, W)`` object ids -> ``(H, W, 3)`` uint8.

    Pixels with id > 0 are blended with their id's palette colour, brightened to full
    intensity (``alpha`` of colour), and each object's outline (pixels with a 4-neighbour of
    another id) is drawn in that colour; background pixels are left unchanged.
    """
    if frame.shape[:2] != labels.shape:
        raise ValueError(f"frame {frame.shape} and labels {labels.shape} differ in size")
    colours = np.asarray(palette[: 256 * 3], dtype=np.float32).reshape(-1, 3)
    colours = colours * 255.0 / np.maximum(colours.max(axis=1, keepdims=True), 1.0)
    out = frame.astype(np.float32)
    fg = labels > 0
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[labels[fg]]
    edge = np.zeros_like(fg)
    edge[:-1] |= labels[:-1] != labels[1:]
    edge[1:] |= labels[1:] != labels[:-1]
    edge[:, :-1] |= labels[:, :-1] != labels[:, 1:]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge &= fg
    out[edge] = colours[labels[edge]]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def evenly_spaced(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices from 0 to ``num_frames - 1``, evenly spaced, without repeats."""
    return sorted({int(round(v)) for v in np.linspace(0, num_frames - 1, count)})


def save_overlay_grid(path: Path, frames: np.ndarray, pred: np.ndarray, gt: np.ndarray,
                      indices: Sequence[int], palette: Sequence[int]) -> Path:
    """Write a 2-row grid (top: prediction, bottom: ground truth) for frames ``indices``.

    ``frames``: ``(T, H, W, 3)`` uint8; ``pred``, ``gt``: ``(T, H, W)`` object ids.
    """
    h, w = frames.shape[1:3]
    canvas = Image.new("RGB", (w * len(indices), 2 * h), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    for col, t in enumerate(indices):
        for row, labels in enumerate((pred, gt)):
            panel = overlay(frames[t], labels[t], palette)
            canvas.paste(Image.fromarray(panel), (col * w, row * h))
            caption = f"{'pred' if row == 0 else 'gt'} {t}"
            draw.text((col * w + 3, row * h + 2), caption, fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
