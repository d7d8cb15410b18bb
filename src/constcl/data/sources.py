"""Where videos come from: a folder tree, a Kinetics-style CSV, a ``path,label`` CSV or a list.

See ``docs/data.md`` for the formats with examples. Every source yields ``VideoItem``s; labels
are integers (class names sorted alphabetically get 0, 1, ...) or None when the source has none.

Per-video box files (for the ``detections`` region generator) are CSVs with the header
``frame_index,x1,y1,x2,y2,score``, coordinates normalised to [0, 1] in the source frame, found
as ``<boxes_dir>/<video stem>.csv`` when a boxes folder is given, else next to the video as
``<video stem>.boxes.csv``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoItem",
    "list_videos",
    "resolve_source",
    "find_box_file",
    "load_boxes",
]

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".avi", ".webm")
BOX_COLUMNS = ("frame_index", "x1", "y1", "x2", "y2", "score")


@dataclass(frozen=True)
class VideoItem:
    """One video: its file, integer label (None if unlabelled) and class name, and box file."""

    path: Path
    label: int | None = None
    label_name: str | None = None
    boxes_path: Path | None = None


def list_videos(
    source: str | Path, root: str | Path | None = None, boxes_dir: str | Path | None = None
) -> list[VideoItem]:
    """Videos of a source; rows whose file is missing are logged and skipped.

    Args:
        source: a folder (searched recursively; the first sub-folder level names the class when
            videos sit in sub-folders), a ``.csv`` (Kinetics columns
            ``label,youtube_id,time_start,time_end,split`` or simply ``path,label``) or a
            ``.txt`` list (one path per line, optionally followed by whitespace and an integer
            label, as UCF101's ``trainlist01.txt``).
        root: folder that relative paths and Kinetics ids are resolved against (default: the
            list file's folder).
        boxes_dir: folder of per-video box files (default: look next to each video).
    """
    items, missing = resolve_source(source, root)
    if missing:
        log.warning(
            "%d of %d listed videos are missing, e.g. %s",
            len(missing),
            len(items) + len(missing),
            missing[:3],
        )
    return [_with_boxes(item, boxes_dir) for item in items]


def resolve_source(
    source: str | Path, root: str | Path | None = None
) -> tuple[list[VideoItem], list[str]]:
    """(items whose file exists, entries whose file is missing). Raises FileNotFoundError or
    ValueError when ``source`` itself is unusable."""
    source = Path(source)
    if source.is_dir():
        return _from_folder(source), []
    if not source.is_file():
        raise FileNotFoundError(f"no such folder or list file: {source}")
    base = Path(root) if root is not None else source.parent
    if source.suffix.lower() == ".csv":
        return _from_csv(source, base)
    if source.suffix.lower() == ".txt":
        return _from_txt(source, base)
    if source.suffix.lower() in VIDEO_EXTENSIONS:
        return [VideoItem(source)], []
    raise ValueError(f"unknown source type {source.suffix!r}: use a folder, .csv, .txt or video")


def _from_folder(folder: Path) -> list[VideoItem]:
    paths = sorted(
        p for p in folder.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
    )
    rel = [p.relative_to(folder) for p in paths]
    if not rel or any(len(r.parts) < 2 for r in rel):  # no class sub-folders
        return [VideoItem(p) for p in paths]
    classes = {name: i for i, name in enumerate(sorted({r.parts[0] for r in rel}))}
    return [VideoItem(p, classes[r.parts[0]], r.parts[0]) for p, r in zip(paths, rel, strict=True)]


def _label_map(names: list[str]) -> dict[str, int]:
    """Integer labels: used as given when every name is an integer, else sorted class names."""
    if all(n.strip().lstrip("-").isdigit() for n in names):
        return {n: int(n) for n in names}
    return {name: i for i, name in enumerate(sorted(set(names)))}


def _from_csv(path: Path, base: Path) -> tuple[list[VideoItem], list[str]]:
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = set(rows[0]) if rows else set()
    if "youtube_id" in columns:
        return _from_kinetics(rows, base)
    if "path" not in columns:
        raise ValueError(f"{path}: CSV needs a 'path' or a 'youtube_id' column, has {columns}")
    names = [r.get("label", "") or "" for r in rows]
    labels = _label_map([n for n in names if n])
    items, missing = [], []
    for row, name in zip(rows, names, strict=True):
        file = _resolve(base, row["path"])
        if not file.is_file():
            missing.append(str(file))
            continue
        label_name = row.get("class_name") or name or None
        items.append(VideoItem(file, labels[name] if name else None, label_name))
    return items, missing


def _from_kinetics(rows: list[dict], base: Path) -> tuple[list[VideoItem], list[str]]:
    """Kinetics rows; a file is found by stem ``<id>_<start:06d>_<end:06d>`` or ``<id>``
    anywhere under ``base``."""
    by_stem = {p.stem: p for p in base.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS}
    names = [r.get("label", "") or "" for r in rows]
    labels = {n: i for i, n in enumerate(sorted({n for n in names if n}))}
    items, missing = [], []
    for row, name in zip(rows, names, strict=True):
        yid = row["youtube_id"]
        stems = [yid]
        if row.get("time_start") and row.get("time_end"):
            start, end = int(float(row["time_start"])), int(float(row["time_end"]))
            stems.insert(0, f"{yid}_{start:06d}_{end:06d}")
        file = next((by_stem[s] for s in stems if s in by_stem), None)
        if file is None:
            missing.append(stems[0])
            continue
        items.append(VideoItem(file, labels[name] if name else None, name or None))
    return items, missing


def _from_txt(path: Path, base: Path) -> tuple[list[VideoItem], list[str]]:
    items, missing = [], []
    for line in path.read_text().splitlines():
        parts = line.strip().rsplit(maxsplit=1)
        if not parts or parts[0].startswith("#"):
            continue
        label = None
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            label = int(parts[1])
        else:
            parts = [line.strip()]
        file = _resolve(base, parts[0])
        if file.is_file():
            items.append(VideoItem(file, label, None))
        else:
            missing.append(str(file))
    return items, missing


def _resolve(base: Path, name: str) -> Path:
    p = Path(name.strip())
    return p if p.is_absolute() else base / p


def find_box_file(video: str | Path, boxes_dir: str | Path | None = None) -> Path | None:
    """The box file of a video or None: ``<boxes_dir>/<stem>.csv``, else ``<stem>.boxes.csv``
    next to the video."""
    video = Path(video)
    candidate = (
        Path(boxes_dir) / f"{video.stem}.csv"
        if boxes_dir is not None
        else video.with_name(f"{video.stem}.boxes.csv")
    )
    return candidate if candidate.is_file() else None


def _with_boxes(item: VideoItem, boxes_dir: str | Path | None) -> VideoItem:
    boxes = find_box_file(item.path, boxes_dir)
    return item if boxes is None else VideoItem(item.path, item.label, item.label_name, boxes)


def load_boxes(path: str | Path) -> dict[int, np.ndarray]:
    """Read a box file into {frame_index: float32 (N, 5) array of x1, y1, x2, y2, score}."""
    with Path(path).open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or not set(BOX_COLUMNS) <= set(reader.fieldnames):
            raise ValueError(f"{path}: box file needs the header {','.join(BOX_COLUMNS)}")
        rows: dict[int, list[list[float]]] = {}
        for row in reader:
            box = [float(row[c]) for c in BOX_COLUMNS[1:]]
            rows.setdefault(int(row["frame_index"]), []).append(box)
    return {k: np.asarray(v, dtype=np.float32).reshape(-1, 5) for k, v in rows.items()}
