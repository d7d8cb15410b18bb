"""DAVIS-2017 semi-supervised data on disk: sequence lists, frames, palette masks.

Layout (``davis2017-evaluation``)::

    ROOT/JPEGImages/480p/<seq>/00000.jpg ...
    ROOT/Annotations/480p/<seq>/00000.png ...   palette PNG: value = object id, 0 background,
                                                255 void
    ROOT/ImageSets/2017/val.txt                 one sequence name per line

Results are written in the same format, one folder of palette PNGs per sequence. ``davis_root``
accepts the DAVIS root or a synthetic world root holding ``davis/``. Nothing is written next to
the data (CRW caches ``.npy`` files beside the annotations, which fails on read-only copies).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from constcl.data.palette import davis_palette
from constcl.data.sources import read_text
from constcl.eval.outputs import safe_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DavisSequence:
    """One sequence: sorted frame and annotation files (the same count)."""

    name: str
    frames: list[Path]
    annotations: list[Path]


def davis_root(data: str | Path) -> Path:
    """The folder holding ``JPEGImages``: ``data`` itself or ``data/davis``."""
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"DAVIS root {str(root)!r} is not a folder")
    if not (root / "JPEGImages").is_dir() and (root / "davis" / "JPEGImages").is_dir():
        log.info("using %s (the davis/ folder of a synthetic world)", root / "davis")
        root = root / "davis"
    return root


def load_sequences(data: str | Path, split: str = "val", year: str = "2017",
                   resolution: str = "480p", limit: int | None = None) -> list[DavisSequence]:
    """Sequences of ``ImageSets/<year>/<split>.txt`` in file order; ``limit`` keeps the first N.

    Raises FileNotFoundError for a missing list or folder and ValueError when a sequence's frame
    and annotation counts differ (the semi-supervised evaluation needs every frame's mask) or a
    listed name is not a plain folder name (``../x``, ``a/b``: it names output paths too).
    """
    root = davis_root(data)
    list_file = root / "ImageSets" / year / f"{split}.txt"
    if not list_file.is_file():
        raise FileNotFoundError(f"no sequence list {list_file}")
    names = [safe_name(n.strip(), list_file, i)
             for i, n in enumerate(read_text(list_file).splitlines(), start=1) if n.strip()]
    seqs = []
    for name in names[:limit] if limit else names:
        frames = sorted((root / "JPEGImages" / resolution / name).glob("*.jpg"))
        annos = sorted((root / "Annotations" / resolution / name).glob("*.png"))
        if not frames:
            raise FileNotFoundError(f"no frames for {name} in {root / 'JPEGImages' / resolution}")
        if len(frames) != len(annos):
            raise ValueError(f"{name}: {len(frames)} frames but {len(annos)} annotations")
        seqs.append(DavisSequence(name, frames, annos))
    return seqs


def read_frames(paths: list[Path]) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 RGB."""
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB")))
    return np.stack(out)


def read_annotations(paths: list[Path]) -> tuple[np.ndarray, list[int]]:
    """``(T, H, W)`` uint8 object ids (palette indices) and the first file's flat palette."""
    out, palette = [], None
    for p in paths:
        with Image.open(p) as im:
            if im.mode != "P" and im.mode != "L":
                raise ValueError(f"{p}: expected a palette (P) or grey (L) PNG, got {im.mode}")
            if palette is None:
                palette = im.getpalette() if im.mode == "P" else None
            out.append(np.asarray(im))
    return np.stack(out), (palette or davis_palette())
