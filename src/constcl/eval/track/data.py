"""OTB-2015 sequences on disk, read as got10k's ``OTB(root, version=2015, download=False)``.

Layout: ``root/<Seq>/img/*.jpg`` and ``root/<Seq>/groundtruth_rect*.txt`` with one
``x, y, w, h`` row per frame (1-based top-left, pixels) separated by commas, tabs or spaces.

* A folder with several ground-truth files (``groundtruth_rect.1.txt``, ``.2.txt``: Jogging,
  Skating2) gives one target per file, named ``<Seq>.1``, ``<Seq>.2``; empty files are skipped
  (``Human4``'s ``.1``).
* Sequences whose annotated frames are a sub-range of ``img/`` (``FRAME_RANGES``: David,
  Football1, Freeman3, Freeman4, Diving) are sliced as got10k does; afterwards the number of
  images must equal the number of boxes.
* The synthetic world writes ``OUT/otb/<video>_obj<k>/``; ``otb_root`` accepts either that
  ``otb`` folder or the world root.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from constcl.errors import DataFileError

log = logging.getLogger(__name__)

# 1-based inclusive frame ranges of the sequences whose annotation does not cover img/.
FRAME_RANGES: dict[str, tuple[int, int]] = {
    "david": (300, 770),
    "football1": (1, 74),
    "freeman3": (1, 460),
    "freeman4": (1, 283),
    "diving": (1, 215),
}


@dataclass(frozen=True)
class OTBSequence:
    """One tracking target: its frames and ``(T, 4)`` ground-truth boxes ``x, y, w, h``."""

    name: str
    frames: list[Path]
    boxes: np.ndarray


def read_boxes(path: str | Path) -> np.ndarray:
    """``groundtruth_rect*.txt`` -> ``(T, 4)`` float boxes; commas, tabs and spaces all split.

    Raises :class:`DataFileError` (a ValueError) naming the file and line for a row that does
    not hold exactly four finite numbers (OTB-2015 has no absent-target rows; a NaN row would
    only be found after the whole sequence was tracked), and for a first box without area (the
    tracker starts from it).
    """
    rows = []
    for lineno, line in enumerate(Path(path).read_text().splitlines(), start=1):
        fields = re.split(r"[,\s]+", line.strip())
        if fields == [""]:
            continue
        try:
            if len(fields) != 4:
                raise ValueError
            row = [float(v) for v in fields]
        except ValueError:
            raise DataFileError(path, f"expected 4 numbers x,y,w,h; got {line!r}",
                                lineno) from None
        if not all(math.isfinite(v) for v in row):
            raise DataFileError(path, f"x,y,w,h must be finite numbers; got {line!r}", lineno)
        if not rows and (row[2] <= 0 or row[3] <= 0):
            raise DataFileError(path, f"the first box starts the tracker and needs w, h > 0; "
                                      f"got {line!r}", lineno)
        rows.append(row)
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def otb_root(data: str | Path) -> Path:
    """The folder holding the sequence folders: ``data`` itself or ``data/otb``."""
    root = Path(data)
    if not root.is_dir():
        raise FileNotFoundError(f"OTB root {str(root)!r} is not a folder")
    if not any(root.glob("*/groundtruth_rect*.txt")) and (root / "otb").is_dir():
        log.info("using %s (the otb/ folder of a synthetic world)", root / "otb")
        root = root / "otb"
    return root


def _gt_files(seq_dir: Path) -> list[tuple[str, Path]]:
    """``(target name, ground-truth file)`` pairs of one folder, empty files skipped."""
    files = sorted(seq_dir.glob("groundtruth_rect*.txt"))
    files = [f for f in files if f.stat().st_size > 0 and f.read_text().strip()]
    if len(files) == 1:
        return [(seq_dir.name, files[0])]
    out = []
    for f in files:
        m = re.fullmatch(r"groundtruth_rect\.(\d+)\.txt", f.name)
        if m is None:
            raise ValueError(f"{seq_dir}: cannot tell targets apart in {[x.name for x in files]}")
        out.append((f"{seq_dir.name}.{m.group(1)}", f))
    return out


def load_sequences(data: str | Path, limit: int | None = None) -> list[OTBSequence]:
    """All targets under an OTB root, sorted by name; ``limit`` keeps ``limit`` of them spread
    evenly over that list (``spread_subset``), not the first ones: sorted names group a
    synthetic world's targets by class (its first 64 of 278 are circles and crosses only)."""
    root = otb_root(data)
    seqs = []
    for seq_dir in sorted(p for p in root.iterdir() if (p / "img").is_dir()):
        frames = sorted((seq_dir / "img").glob("*.jpg"))
        for name, gt_file in _gt_files(seq_dir):
            boxes = read_boxes(gt_file)
            frange = FRAME_RANGES.get(seq_dir.name.lower())
            target_frames = frames[frange[0] - 1 : frange[1]] if frange else frames
            if len(target_frames) != len(boxes):
                raise ValueError(f"{name}: {len(target_frames)} images but {len(boxes)} boxes")
            seqs.append(OTBSequence(name, target_frames, boxes))
    if not seqs:
        raise FileNotFoundError(f"no OTB sequences (img/ + groundtruth_rect*.txt) in {root}")
    seqs.sort(key=lambda s: s.name)
    return spread_subset(seqs, limit)


def spread_subset(items: list, limit: int | None) -> list:
    """``limit`` items at evenly spaced positions ``floor(i * len / limit)``, in order (the
    first item always among them); all of them when ``limit`` is None or not smaller."""
    if not limit or limit >= len(items):
        return list(items)
    return [items[i * len(items) // limit] for i in range(limit)]
