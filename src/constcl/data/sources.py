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
import errno
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from constcl.errors import DataFileError

__all__ = [
    "VIDEO_EXTENSIONS",
    "VideoItem",
    "list_videos",
    "resolve_source",
    "find_box_file",
    "load_boxes",
    "read_text",
    "read_csv_rows",
    "walk_files",
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
    source: str | Path, root: str | Path | None = None,
    skipped: list[tuple[str, str]] | None = None,
) -> tuple[list[VideoItem], list[str]]:
    """(items whose file exists, entries whose file is missing). Raises FileNotFoundError or
    ValueError when ``source`` itself is unusable. For a folder, symbolic links that loop or
    dangle are appended to ``skipped`` as ``(path, reason)`` (see :func:`walk_files`)."""
    source = Path(source)
    if source.is_dir():
        return _from_folder(source, skipped), []
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


def walk_files(folder: str | Path, skipped: list[tuple[str, str]] | None = None) -> list[Path]:
    """Every file under ``folder`` (recursively, sorted), following symbolic links to folders.

    Paths keep the link's name (a linked class folder names the class). Folders are scanned
    breadth first and each real folder once: of two ways to reach one folder the shallower
    (then alphabetically first) names it. A link that loops (to a folder above it, or to
    itself) and a dangling link to a video are not followed: they are logged as warnings and
    appended to ``skipped`` as ``(path, reason)``.
    """
    folder = Path(folder)
    out: list[Path] = []

    def skip(path: Path, reason: str) -> None:
        log.warning("skipping %s: %s", path, reason)
        if skipped is not None:
            skipped.append((str(path), reason))

    root = os.path.realpath(folder)
    visited = {root}
    queue: list[tuple[Path, tuple[str, ...]]] = [(folder, (root,))]
    while queue:
        next_level: list[tuple[Path, tuple[str, ...]]] = []
        for directory, ancestors in queue:
            try:
                entries = sorted(os.scandir(directory), key=lambda e: (e.is_symlink(), e.name))
            except OSError as err:
                skip(directory, f"cannot list folder ({err.strerror or err})")
                continue
            for entry in entries:  # real folders before links: they keep their own names
                path = directory / entry.name
                if entry.is_symlink():
                    try:
                        target = os.path.realpath(path, strict=True)
                    except OSError as err:
                        if err.errno == errno.ELOOP:
                            skip(path, "symbolic link loop (the link resolves to itself)")
                        elif path.suffix.lower() in VIDEO_EXTENSIONS:
                            skip(path, f"dangling symbolic link to {os.readlink(path)}")
                        continue
                    if not os.path.isdir(target):
                        out.append(path)
                    elif target in ancestors:
                        skip(path, f"symbolic link loop (points to {target}, a folder above it)")
                    elif target in visited:
                        log.debug("not scanning %s: its folder %s is scanned already", path,
                                  target)
                    else:
                        visited.add(target)
                        next_level.append((path, (*ancestors, target)))
                elif entry.is_dir(follow_symlinks=False):
                    target = os.path.realpath(path)
                    if target not in visited:
                        visited.add(target)
                        next_level.append((path, (*ancestors, target)))
                else:
                    out.append(path)
        queue = next_level
    return sorted(out)


def _from_folder(folder: Path, skipped: list[tuple[str, str]] | None = None
                 ) -> list[VideoItem]:
    paths = sorted(
        p for p in walk_files(folder, skipped)
        if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()
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


def read_text(path: str | Path) -> str:
    """A text file's content as UTF-8; :class:`DataFileError` naming the file and line when it
    is not UTF-8 (e.g. a list saved in Latin-1)."""
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataFileError(path, f"not UTF-8 text (byte {err.start}: "
                                  f"{data[err.start:err.start + 1]!r}); save it as UTF-8",
                            line) from None


def read_csv_rows(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """(header, [(line number, row dict), ...]) of a CSV with a header line.

    Raises :class:`DataFileError` for a file that is not UTF-8, is empty, or has a header but no
    rows. A row shorter than the header has None for its missing columns.
    """
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    rows = []
    for row in reader:
        rows.append((reader.line_num, row))
    if not reader.fieldnames:
        raise DataFileError(path, "empty CSV file (no header line)")
    header = list(reader.fieldnames)
    if not rows:
        raise DataFileError(path, f"CSV has a header ({','.join(header)}) but no rows")
    return header, rows


def _from_csv(path: Path, base: Path) -> tuple[list[VideoItem], list[str]]:
    header, numbered = read_csv_rows(path)
    columns = set(header)
    if "youtube_id" in columns:
        return _from_kinetics(path, numbered, base)
    if "path" not in columns:
        raise DataFileError(path, f"CSV needs a 'path' or a 'youtube_id' column; its header "
                                  f"has {','.join(header)}", 1)
    rows = [row for _, row in numbered]
    for line, row in numbered:
        if not (row.get("path") or "").strip():
            raise DataFileError(path, "empty 'path' column", line)
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


def _seconds(path: Path, line: int, row: dict, column: str) -> int:
    try:
        return int(float(row[column]))
    except (TypeError, ValueError, OverflowError):
        raise DataFileError(path, f"{column} {row[column]!r} is not a number of seconds",
                            line) from None


def _from_kinetics(path: Path, numbered: list[tuple[int, dict]], base: Path
                   ) -> tuple[list[VideoItem], list[str]]:
    """Kinetics rows; a file is found by stem ``<id>_<start:06d>_<end:06d>`` or ``<id>``
    anywhere under ``base``."""
    for line, row in numbered:
        if not (row.get("youtube_id") or "").strip():
            raise DataFileError(path, "empty or missing youtube_id", line)
    by_stem = {p.stem: p for p in walk_files(base) if p.suffix.lower() in VIDEO_EXTENSIONS}
    rows = [row for _, row in numbered]
    names = [r.get("label", "") or "" for r in rows]
    labels = {n: i for i, n in enumerate(sorted({n for n in names if n}))}
    items, missing = [], []
    for (line, row), name in zip(numbered, names, strict=True):
        yid = row["youtube_id"]
        stems = [yid]
        if row.get("time_start") and row.get("time_end"):
            start = _seconds(path, line, row, "time_start")
            end = _seconds(path, line, row, "time_end")
            stems.insert(0, f"{yid}_{start:06d}_{end:06d}")
        file = next((by_stem[s] for s in stems if s in by_stem), None)
        if file is None:
            missing.append(stems[0])
            continue
        items.append(VideoItem(file, labels[name] if name else None, name or None))
    return items, missing


def _from_txt(path: Path, base: Path) -> tuple[list[VideoItem], list[str]]:
    items, missing = [], []
    for line in read_text(path).splitlines():
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
    """Read a box file into {frame_index: float32 (N, 5) array of x1, y1, x2, y2, score}.

    Raises :class:`DataFileError` (a ValueError) naming the file and line for a bad header or
    value."""
    reader = csv.DictReader(io.StringIO(read_text(path), newline=""))
    if reader.fieldnames is None or not set(BOX_COLUMNS) <= set(reader.fieldnames):
        raise DataFileError(path, f"box file needs the header {','.join(BOX_COLUMNS)}", 1)
    rows: dict[int, list[list[float]]] = {}
    for row in reader:
        try:
            box = [float(row[c]) for c in BOX_COLUMNS[1:]]
            frame = int(row["frame_index"])
        except (TypeError, ValueError):
            raise DataFileError(path, f"expected numbers in {','.join(BOX_COLUMNS)}, got "
                                      f"{[row.get(c) for c in BOX_COLUMNS]}",
                                reader.line_num) from None
        rows.setdefault(frame, []).append(box)
    return {k: np.asarray(v, dtype=np.float32).reshape(-1, 5) for k, v in rows.items()}
