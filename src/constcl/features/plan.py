"""What ``constcl extract`` computes: snippet positions, output names and box rows.

**Snippets.** Frame indices are on the nominal grid of :mod:`constcl.data.decode` (index ``i`` is
the frame shown at ``i / fps`` seconds after the first frame, for variable-frame-rate files
too). A snippet is ``clip_frames`` frames every ``frame_stride`` frames, spanning
``span = (clip_frames - 1) * frame_stride + 1`` frames. Snippet ``k`` starts at frame
``round(k * step)``, with ``step = stride * fps`` for a stride in seconds or ``stride`` for
one in frames, for every ``k`` whose snippet fits in the video (start ``<= num_frames - span``);
a video shorter than one span gets one snippet at frame 0, its last frame repeated. A snippet's
start time is ``start / fps`` seconds.

**Output names** mirror the source's relative paths (relative to the source folder, or to the
list's folder / ``root`` for a CSV or list; an absolute path outside it keeps its whole path
under ``abs/``): ``class/video.mp4`` -> ``class/video.npy`` (``class/video.global.npy`` and
``class/video.local.npy`` for ``branch=both``), ``.res5.npy`` for dense maps and ``.boxes.npy``
for box features. Two videos that differ only in their extension keep it (``video.mp4.npy``).

**Boxes** (``--boxes``) are AVA-style CSV rows ``video_id, timestamp, x1, y1, x2, y2[, ...]``
(no header; a first line whose timestamp is not a number is read as a header), ``video_id`` the
video's file stem, ``timestamp`` in seconds from the first frame, the box normalised to
``[0, 1]`` in the full frame. Each distinct timestamp is a clip centred on frame
``round(timestamp * fps)`` (the AVA convention); further columns are ignored.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from constcl.data.sources import VideoItem, read_text
from constcl.errors import DataFileError

__all__ = ["BoxRow", "Job", "STRIDE_UNITS", "plan_jobs", "read_box_rows", "snippet_starts"]

STRIDE_UNITS = ("seconds", "frames")


@dataclass(frozen=True)
class BoxRow:
    """One row of the boxes CSV: its line, time (s) and box (x1, y1, x2, y2) normalised."""

    line: int
    timestamp: float
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Job:
    """One video: source item, output name stem relative to OUT (``class/video``) and boxes."""

    item: VideoItem
    rel: str
    boxes: tuple[BoxRow, ...] = field(default=())

    @property
    def id(self) -> str:
        """Record name: a hash of the output name (unique within OUT)."""
        return hashlib.sha1(self.rel.encode()).hexdigest()[:20]


def snippet_starts(num_frames: int, fps: float, clip_frames: int, frame_stride: int,
                   stride: float, unit: str = "seconds") -> np.ndarray:
    """Start frames ``(snippets,)`` of a video (module docstring)."""
    if unit not in STRIDE_UNITS:
        raise ValueError(f"stride unit must be one of {list(STRIDE_UNITS)}; got {unit!r}")
    step = stride * fps if unit == "seconds" else float(stride)
    if step <= 0 or not math.isfinite(step):
        raise ValueError(f"snippet stride must be positive; got {stride} {unit} at {fps} fps")
    last = num_frames - ((clip_frames - 1) * frame_stride + 1)
    if last < 0:
        return np.zeros(1, dtype=np.int64)
    count = math.floor(last / step + 1e-9) + 1
    return np.floor(np.arange(count) * step + 0.5).astype(np.int64)


def _relative(path: Path, base: Path) -> Path:
    for p, b in ((path, base), (path.resolve(), base.resolve())):
        if p.is_relative_to(b) and ".." not in p.relative_to(b).parts:
            return p.relative_to(b)  # the name as listed (a linked class folder keeps its own)
    return Path("abs", *path.resolve().parts[1:])  # never a name outside OUT


def plan_jobs(items: list[VideoItem], base: Path, boxes: dict[str, list[BoxRow]] | None = None
              ) -> list[Job]:
    """One job per video, named after its path relative to ``base`` (module docstring)."""
    rels = [_relative(item.path, base) for item in items]
    stems = Counter(str(r.with_suffix("")) for r in rels)
    jobs = []
    for item, rel in zip(items, rels, strict=True):
        name = str(rel.with_suffix("")) if stems[str(rel.with_suffix(""))] == 1 else str(rel)
        rows = tuple((boxes or {}).get(item.path.stem, ()))
        jobs.append(Job(item, name.replace(os.sep, "/"), rows))
    return jobs


def output_files(rel: str, branches: tuple[str, ...], dense: bool, boxes: bool
                 ) -> dict[str, str]:
    """{kind: file relative to OUT}; kinds ``<branch>``, ``<branch>.res5``, ``<branch>.boxes``."""
    files = {}
    for branch in branches:
        stem = rel if len(branches) == 1 else f"{rel}.{branch}"
        files[branch] = f"{stem}.npy"
        if dense:
            files[f"{branch}.res5"] = f"{stem}.res5.npy"
        if boxes:
            files[f"{branch}.boxes"] = f"{stem}.boxes.npy"
    return files


def read_box_rows(path: str | Path) -> dict[str, list[BoxRow]]:
    """The boxes CSV (module docstring) -> {video_id: rows in file order}; DataFileError naming
    the file and line for a bad row."""
    rows: dict[str, list[BoxRow]] = {}
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    for line, row in enumerate(reader, start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 6:
            raise DataFileError(path, f"expected video_id, timestamp, x1, y1, x2, y2; got "
                                      f"{len(row)} columns", line)
        try:
            numbers = [float(v) for v in row[1:6]]
        except ValueError:
            if line == 1:
                continue  # a header line
            raise DataFileError(path, f"timestamp and box must be numbers; got {row[1:6]}",
                                line) from None
        t, x1, y1, x2, y2 = numbers
        if not all(math.isfinite(v) for v in numbers) or t < 0:
            raise DataFileError(path, f"timestamp must be >= 0 and every number finite; got "
                                      f"{row[1:6]}", line)
        if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
            raise DataFileError(path, f"box must be normalised x1 < x2, y1 < y2 in [0, 1]; got "
                                      f"{row[2:6]}", line)
        rows.setdefault(row[0].strip(), []).append(BoxRow(line, t, (x1, y1, x2, y2)))
    if not rows:
        raise DataFileError(path, "no box rows (video_id, timestamp, x1, y1, x2, y2)")
    return rows
