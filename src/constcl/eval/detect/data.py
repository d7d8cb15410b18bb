"""AVA v2.2 annotation files for ``constcl eval detect`` (EVALUATION.md section 2.1).

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
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from constcl.data.sources import VIDEO_EXTENSIONS
from constcl.eval.metrics.ava_map import (
    AVARow,
    read_ava_exclusions,
    read_ava_groundtruth_csv,
    read_ava_label_map,
)

__all__ = ["AVAFiles", "KeyFrames", "find_ava_files", "groundtruth_key_frames",
           "detection_key_frames", "timestamp_to_frame", "video_paths"]

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


def detection_key_frames(path: Path, min_score: float, num_classes: int) -> KeyFrames:
    """Person boxes with ``score >= min_score`` from an LFB-style CSV (8 columns, the 7th
    empty or an action id; a box listed once per action is kept once)."""
    grouped: OrderedDict[Key, OrderedDict[tuple, None]] = OrderedDict()
    with open(path, newline="") as f:
        for i, row in enumerate(csv.reader(f)):
            if not row:
                continue
            if len(row) != 8:
                raise ValueError(f"{path}:{i + 1}: expected 8 columns, got {row!r}")
            if float(row[7]) >= min_score:
                box = tuple(float(v) for v in row[2:6])
                grouped.setdefault((row[0], int(row[1])), OrderedDict())[box] = None
    out = KeyFrames()
    for key, boxes in grouped.items():
        out.keys.append(key)
        out.boxes.append(np.array(list(boxes), dtype=np.float64).reshape(-1, 4))
        out.labels.append(np.zeros((len(boxes), num_classes), np.float32))
    return out


def read_groundtruth(path: Path) -> list[AVARow]:
    return read_ava_groundtruth_csv(path)


def timestamp_to_frame(timestamp: int, fps: float, time_offset: float = 0.0) -> int:
    """Frame index of the key frame at second ``timestamp`` (see the module docstring)."""
    return int(round((timestamp - time_offset) * fps))


def video_paths(folder: Path, video_ids: set[str]) -> dict[str, Path]:
    """``{video_id: file}`` for the ids that have a video (matched by file stem)."""
    found = {p.stem: p for p in folder.rglob("*")
             if p.suffix.lower() in VIDEO_EXTENSIONS and p.stem in video_ids}
    missing = sorted(video_ids - set(found))
    if missing:
        log.warning("%d of %d AVA videos not found under %s, e.g. %s", len(missing),
                    len(video_ids), folder, missing[:3])
    return found
