"""DAVIS (and PASCAL VOC) palette PNG masks: the palette and the mask writer.

Both the synthetic world (ground truth) and the propagation evaluation (predictions) write
masks in this format, so the reader of either never needs to know which wrote them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["davis_palette", "write_palette_masks"]


def davis_palette() -> list[int]:
    """The 256-colour palette of DAVIS (and PASCAL VOC) annotation PNGs, flat RGB triples.

    Id 0 is black, 1 (128, 0, 0), 2 (0, 128, 0), 3 (128, 128, 0), 4 (0, 0, 128), ...
    """
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette.extend((r, g, b))
    return palette


def write_palette_masks(folder: Path, labels: np.ndarray, palette: list[int] | None = None
                        ) -> None:
    """Write ``(T, H, W)`` object ids as palette PNGs ``folder/00000.png``, ``00001.png``, ...
    (``palette``: flat RGB triples, default :func:`davis_palette`)."""
    folder.mkdir(parents=True, exist_ok=True)
    palette = palette or davis_palette()
    for t, label in enumerate(labels):
        image = Image.fromarray(np.asarray(label).astype(np.uint8), mode="P")
        image.putpalette(palette)
        image.save(folder / f"{t:05d}.png")
