"""AVA v2.2 annotation files for ``constcl eval detect`` (docs/evaluation.md section 2.1).

Layout under ``--data`` (the AVA root holding ``annotations/``, or a folder holding
``ava/annotations/`` such as the synthetic world's root):

* ``ava_{train,val}_v2.2.csv``: ``video_id, timestamp, x1, y1, x2, y2, action_id, person_id``
  (no header, boxes normalised to [0, 1]); a person with k actions is k rows with one box.
* ``ava_action_list_v2.2_for_activitynet_2019.pbtxt``: the evaluated classes.
* ``ava_val_excluded_timestamps_v2.2.csv`` (optional): key frames left out of evaluation.
* ``ava_val_predicted_boxes.csv`` (optional; ``--boxes detections``): person-detector boxes in
  the LFB / SlowFast layout ``video_id, timestamp, x1, y1, x2, y2, <empty>, score``.

Videos are found by file stem (``<video_id>.mp4`` ...) under ``--videos`` (default the first of
``ROOT/videos``, ``ROOT/videos_15min``, ``ROOT/../videos`` that exists, ROOT being the folder
that holds ``annotations/``).

**Timestamps to frames.** A key frame at second ``s`` is frame
``round((s - time_offset) * fps)`` of the video file. The synthetic world uses offset 0 and
its 25 fps (``s * fps``, key frames 0, 25, 50, ...); the AVA 15-minute cuts of PySlowFast
(``ffmpeg -ss 900``) use offset 900 (``ava_helper.sec_to_frame``); ``fps`` defaults to the
file's own rate.
"""

from __future__ import annotations

import csv
import io
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from constcl.data.sources import VIDEO_EXTENSIONS, read_text, walk_files
from constcl.errors import DataFileError
from constcl.eval.metrics.ava_map import (
    AVARow,
    read_ava_exclusions,
    read_ava_groundtruth_csv,
    read_ava_label_map,
)

__all__ = ["AVAFiles", "BoxFixes", "KeyFrames", "find_ava_files", "fix_boxes",
           "groundtruth_key_frames", "detection_key_frames", "timestamp_to_frame",
           "video_paths"]

log = logging.getLogger(__name__)

Key = tuple[str, int]


@dataclass(frozen=True)
class AVAFiles:
    """Paths of one AVA-layout data set (``excluded`` / ``val_detections`` may be None)."""

    train: Path
    val: Path
    label_map: Path
    excluded: Path | None
    val_detections: Path | None
    videos: Path


@dataclass
class KeyFrames:
    """Boxes grouped by key frame, in file order.

    ``keys[i]`` is ``(video_id, timestamp)``; ``boxes[i]`` float64 ``(K_i, 4)`` normalised
    ``x1, y1, x2, y2``; ``labels[i]`` float32 ``(K_i, C)`` multi-hot over the evaluated
    classes (zeros for detected boxes, which have no labels).
    """

    keys: list[Key] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)

    @property
    def num_boxes(self) -> int:
        return int(sum(len(b) for b in self.boxes))


@dataclass
class BoxFixes:
    """Annotation boxes that were not inside [0, 1] x [0, 1] with x1 <= x2, y1 <= y2:
    ``clipped`` to the frame, or ``dropped`` (inverted, empty after clipping, or not numbers)."""

    clipped: int = 0
    dropped: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"clipped": self.clipped, "dropped": self.dropped}


def fix_boxes(rows: list[AVARow], source: str | Path, fixes: BoxFixes) -> list[AVARow]:
    """``rows`` with every box inside the frame: coordinates outside [0, 1] are clipped;
    inverted boxes (``x2 < x1`` or ``y2 < y1``), boxes left empty by clipping and NaN / inf
    coordinates are dropped. Counts go to ``fixes``; a WARNING names ``source`` and an example.
    Rows that need no fix are returned unchanged (same objects, same order)."""
    out: list[AVARow] = []
    clipped, dropped = 0, 0
    example: dict[str, AVARow] = {}
    for row in rows:
        x1, y1, x2, y2 = row[2:6]
        if not all(map(math.isfinite, (x1, y1, x2, y2))) or x2 < x1 or y2 < y1:
            dropped += 1
            example.setdefault("dropped", row)
            continue
        if 0.0 <= x1 and 0.0 <= y1 and x2 <= 1.0 and y2 <= 1.0:
            out.append(row)
            continue
        cx1, cy1, cx2, cy2 = (min(max(v, 0.0), 1.0) for v in (x1, y1, x2, y2))
        if cx2 <= cx1 or cy2 <= cy1:  # entirely outside the frame
            dropped += 1
            example.setdefault("dropped", row)
            continue
        clipped += 1
        example.setdefault("clipped", row)
        out.append((row[0], row[1], cx1, cy1, cx2, cy2, *row[6:]))  # type: ignore[arg-type]
    if clipped or dropped:
        log.warning("%s: clipped %d box(es) to [0, 1] (e.g. %s) and dropped %d inverted or empty "
                    "box(es) (e.g. %s)", source, clipped, example.get("clipped"), dropped,
                    example.get("dropped"))
    fixes.clipped += clipped
    fixes.dropped += dropped
    return out


def find_ava_files(data: str | Path, videos: str | Path | None = None,
                   detections: str | Path | None = None) -> AVAFiles:
    """Locate the annotation files and the video folder (see the module docstring)."""
    data = Path(data)
    ann = next((d for d in (data / "annotations", data / "ava" / "annotations", data)
                if (d / "ava_train_v2.2.csv").is_file()), None)
    if ann is None:
        raise FileNotFoundError(f"{data}: no annotations/ava_train_v2.2.csv (AVA v2.2 layout)")
    root = ann.parent if ann.name == "annotations" else ann
    label_maps = sorted(ann.glob("ava_action_list_v2.2*.pbtxt")) or sorted(ann.glob("*.pbtxt"))
    if not label_maps:
        raise FileNotFoundError(f"{ann}: no label-map .pbtxt")
    if videos is None:
        videos = next((d for d in (root / "videos", root / "videos_15min", root.parent / "videos")
                       if d.is_dir()), None)
        if videos is None:
            raise FileNotFoundError(f"no videos folder next to {ann}; pass --videos")
    excluded = ann / "ava_val_excluded_timestamps_v2.2.csv"
    det = Path(detections) if detections else ann / "ava_val_predicted_boxes.csv"
    return AVAFiles(ann / "ava_train_v2.2.csv", ann / "ava_val_v2.2.csv", label_maps[0],
                    excluded if excluded.is_file() else None, det if det.is_file() else None,
                    Path(videos))


def load_label_map(files: AVAFiles) -> dict[int, str]:
    """``{class id: name}`` of the evaluated classes, sorted by id."""
    return dict(sorted(read_ava_label_map(files.label_map).items()))


def load_exclusions(files: AVAFiles) -> set[Key]:
    return read_ava_exclusions(files.excluded) if files.excluded else set()


def groundtruth_key_frames(rows: list[AVARow], class_ids: list[int]) -> KeyFrames:
    """Group ground-truth rows into unique boxes per key frame with multi-hot labels.

    Rows with the same key and the same box (and person id) are one person; actions outside
    ``class_ids`` are ignored (the box is kept, with whatever evaluated labels it has).
    """
    pos = {c: i for i, c in enumerate(class_ids)}
    people: OrderedDict[Key, OrderedDict[tuple, np.ndarray]] = OrderedDict()
    for vid, ts, x1, y1, x2, y2, action, person in rows:
        per_key = people.setdefault((vid, ts), OrderedDict())
        label = per_key.setdefault((x1, y1, x2, y2, person), np.zeros(len(pos), np.float32))
        if action in pos:
            label[pos[action]] = 1.0
    out = KeyFrames()
    for key, per_key in people.items():
        out.keys.append(key)
        out.boxes.append(np.array([k[:4] for k in per_key], dtype=np.float64).reshape(-1, 4))
        out.labels.append(np.stack(list(per_key.values())))
    return out


def detection_key_frames(path: Path, min_score: float, num_classes: int,
                         fixes: BoxFixes | None = None) -> KeyFrames:
    """Person boxes with ``score >= min_score`` from an LFB-style CSV (8 columns, the 7th
    empty or an action id; a box listed once per action is kept once). Boxes outside the frame
    are fixed as by :func:`fix_boxes` (counted in ``fixes`` when given)."""
    rows: list[AVARow] = []
    reader = csv.reader(io.StringIO(read_text(path), newline=""))
    for row in reader:
        if not row:
            continue
        if len(row) != 8:
            raise DataFileError(path, f"expected 8 columns, got {row!r}", reader.line_num)
        try:
            score, box = float(row[7]), tuple(float(v) for v in row[2:6])
            key = (row[0], int(row[1]))
        except ValueError:
            raise DataFileError(path, "expected video_id, integer timestamp, 4 box numbers, "
                                      f"<empty>, score; got {row!r}", reader.line_num) from None
        if score >= min_score:
            rows.append((*key, *box, 0, score))  # type: ignore[arg-type]
    grouped: OrderedDict[Key, OrderedDict[tuple, None]] = OrderedDict()
    for row in fix_boxes(rows, path, fixes if fixes is not None else BoxFixes()):
        grouped.setdefault((row[0], row[1]), OrderedDict())[tuple(row[2:6])] = None
    out = KeyFrames()
    for key, boxes in grouped.items():
        out.keys.append(key)
        out.boxes.append(np.array(list(boxes), dtype=np.float64).reshape(-1, 4))
        out.labels.append(np.zeros((len(boxes), num_classes), np.float32))
    return out


def read_groundtruth(path: Path, fixes: BoxFixes | None = None) -> list[AVARow]:
    """Ground-truth rows of ``path`` with boxes fixed as by :func:`fix_boxes`."""
    return fix_boxes(read_ava_groundtruth_csv(path), path,
                     fixes if fixes is not None else BoxFixes())


def timestamp_to_frame(timestamp: int, fps: float, time_offset: float = 0.0) -> int:
    """Frame index of the key frame at second ``timestamp`` (see the module docstring)."""
    return int(round((timestamp - time_offset) * fps))


def video_paths(folder: Path, video_ids: set[str]) -> dict[str, Path]:
    """``{video_id: file}`` for the ids that have a video (matched by file stem)."""
    found = {p.stem: p for p in walk_files(folder)
             if p.suffix.lower() in VIDEO_EXTENSIONS and p.stem in video_ids}
    missing = sorted(video_ids - set(found))
    if missing:
        log.warning("%d of %d AVA videos not found under %s, e.g. %s", len(missing),
                    len(video_ids), folder, missing[:3])
    return found
