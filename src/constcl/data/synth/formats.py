"""Annotation files of the synthetic world, in the layouts of the real data sets.

Each writer takes the per-video records (sorted by world index) and writes one data set's
files under the world root; see ``docs/synthetic_world.md`` for the layout and examples. All
output is a pure function of the records and the seed, so it is byte-identical across runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from constcl.data.synth.taxonomy import ACTIONS, action_id
from constcl.data.synth.video import VideoRecord, otb_name

AVA_DIR = "ava/annotations"
UCF_DIR = "ucfTrainTestlist"
SPLITS = ("train", "val")


def _write(path: Path, lines: Iterable[str], newline: str = "\n") -> None:
    """Write ``lines`` each terminated by ``newline`` (bytes exactly as given)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.writelines(line + newline for line in lines)


def key_frames(frames: int, fps: int) -> list[tuple[int, int]]:
    """AVA-style key frames at 1 Hz: ``(second, frame_index)`` for seconds 0, 1, ... in range."""
    return [(s, s * fps) for s in range(0, (frames - 1) // fps + 1)]


def write_video_index(root: Path, records: list[VideoRecord]) -> None:
    """``videos.csv``: one row per video with its path, 0-based label, class, split, objects."""
    lines = ["video_id,path,label,class_name,split,num_objects"]
    for r in records:
        j = r.job
        label = r.label
        lines.append(
            f"{j.video_id},{j.video_path},{label},{j.class_name},{j.split},{len(r.shapes)}"
        )
    _write(root / "videos.csv", lines)


def write_kinetics(root: Path, records: list[VideoRecord], frames: int, fps: int) -> None:
    """Kinetics annotation CSVs and PySlowFast ``path label`` lists.

    ``kinetics/{train,validate}.csv`` have the official header
    ``label,youtube_id,time_start,time_end,split``; the clip of row ``(label, id)`` is
    ``videos/<label>/<id>.mp4`` (whole file, no ``_start_end`` suffix in the name).
    ``slowfast/{train,val}.csv`` hold ``videos/<class>/<id>.mp4 <0-based label>`` lines.
    """
    end = math.ceil(frames / fps)
    for split, name in zip(SPLITS, ("train", "validate"), strict=True):
        rows = [r for r in records if r.job.split == split]
        lines = ["label,youtube_id,time_start,time_end,split"]
        lines += [f"{r.job.class_name},{r.job.video_id},0,{end},{split}" for r in rows]
        _write(root / "kinetics" / f"{name}.csv", lines)
        _write(root / "slowfast" / f"{split}.csv", [f"{r.job.video_path} {r.label}" for r in rows])


def write_ucf(root: Path, records: list[VideoRecord], classes: list[str]) -> None:
    """UCF101 split files (CRLF line ends, like the originals) under ``ucfTrainTestlist/``.

    ``classInd.txt``: ``<1-based id> <ClassName>``; ``trainlist01.txt``:
    ``<ClassName>/<video_id>.mp4 <1-based id>``; ``testlist01.txt``: the path alone.
    """
    folder = root / UCF_DIR
    _write(folder / "classInd.txt", [f"{i + 1} {name}" for i, name in enumerate(classes)], "\r\n")
    ordered = sorted(records, key=lambda r: (r.job.class_name, r.job.video_id))
    train = [
        f"{r.job.class_name}/{r.job.video_id}.mp4 {r.label + 1}"
        for r in ordered
        if r.job.split == "train"
    ]
    test = [f"{r.job.class_name}/{r.job.video_id}.mp4" for r in ordered if r.job.split == "val"]
    _write(folder / "trainlist01.txt", train, "\r\n")
    _write(folder / "testlist01.txt", test, "\r\n")


def _norm_box(box: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """Pixel-edge box ``x1, y1, x2, y2`` to normalised [0, 1] coordinates."""
    x1, y1, x2, y2 = (float(v) / size for v in box)
    return x1, y1, x2, y2


def _fmt(values: Iterable[float], digits: int = 3) -> str:
    return ",".join(f"{v:.{digits}f}" for v in values)


def ava_rows(record: VideoRecord, fps: int) -> list[str]:
    """AVA v2.2 ground-truth rows of one video: one per visible object per key frame.

    ``video_id,timestamp,x1,y1,x2,y2,action_id,person_id`` with the object's motion type as
    action and its track id as person id. Objects with fewer than ``MIN_VISIBLE`` visible
    pixels at a key frame (fully or almost fully occluded) get no row there.
    """
    job, size = record.job, record.job.size
    rows = []
    for second, frame in key_frames(job.frames, fps):
        for track in range(1, len(record.shapes) + 1):
            if not record.visible(track, frame):
                continue
            box = _norm_box(record.boxes[frame, track - 1], size)
            act = action_id(record.action_at(track, frame))
            rows.append(f"{job.video_id},{second:04d},{_fmt(box)},{act},{track}")
    return rows


def detection_rows(record: VideoRecord, fps: int) -> list[str]:
    """Simulated person-detector output in the ``ava_*_predicted_boxes.csv`` layout.

    ``video_id,timestamp,x1,y1,x2,y2,,score`` (empty action column, as in the LFB/SlowFast
    files): every ground-truth box jittered by about 4 % of its size with score 0.8-1.0, one in
    ten missed, plus occasional false positives with scores 0.05-0.7.
    """
    job = record.job
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, job.index, 1]))
    rows = []
    for second, frame in key_frames(job.frames, fps):
        boxes: list[tuple[np.ndarray, float]] = []
        for track in range(1, len(record.shapes) + 1):
            if not record.visible(track, frame) or rng.random() < 0.1:
                continue
            box = np.array(_norm_box(record.boxes[frame, track - 1], job.size))
            wh = np.tile(box[2:] - box[:2], 2)
            boxes.append((box + rng.normal(0.0, 0.04, 4) * wh, rng.uniform(0.8, 1.0)))
        if rng.random() < 0.3:
            corner = rng.uniform(0.0, 0.8, 2)
            boxes.append(
                (
                    np.concatenate([corner, corner + rng.uniform(0.05, 0.2, 2)]),
                    rng.uniform(0.05, 0.7),
                )
            )
        for box, score in boxes:
            x1, y1, x2, y2 = np.clip(box, 0.0, 1.0)
            x1, x2 = min(x1, x2 - 1e-3), max(x2, x1 + 1e-3)
            y1, y2 = min(y1, y2 - 1e-3), max(y2, y1 + 1e-3)
            rows.append(f"{job.video_id},{second:04d},{_fmt((x1, y1, x2, y2))},,{score:.3f}")
    return rows


def ava_label_map() -> list[str]:
    """Label map lines in the ``ava_action_list_v2.2_for_activitynet_2019.pbtxt`` layout."""
    lines = []
    for name in ACTIONS:
        lines += ["item {", f'  name: "{name}"', f"  id: {action_id(name)}", "}"]
    return lines


def write_ava(root: Path, records: list[VideoRecord], fps: int) -> None:
    """AVA v2.2 files under ``ava/annotations/``: GT, detections, label map, exclusions."""
    folder = root / AVA_DIR
    for split in SPLITS:
        rows = [r for r in records if r.job.split == split]
        _write(folder / f"ava_{split}_v2.2.csv", [x for r in rows for x in ava_rows(r, fps)])
        detections = [x for r in rows for x in detection_rows(r, fps)]
        _write(folder / f"ava_{split}_predicted_boxes.csv", detections)
    _write(folder / "ava_action_list_v2.2_for_activitynet_2019.pbtxt", ava_label_map())
    _write(folder / "ava_val_excluded_timestamps_v2.2.csv", [])


def otb_lines(record: VideoRecord, track: int) -> list[str]:
    """OTB ``groundtruth_rect.txt`` lines ``x,y,w,h``: 1-based top-left pixel, size in pixels."""
    lines = []
    for x1, y1, x2, y2 in record.boxes[:, track - 1]:
        lines.append(f"{x1 + 1},{y1 + 1},{x2 - x1},{y2 - y1}")
    return lines


def write_otb(root: Path, records: list[VideoRecord]) -> None:
    """``otb/<seq>/groundtruth_rect.txt`` for every OTB sequence the workers wrote images for."""
    for r in records:
        for track in r.otb_tracks:
            _write(
                root / "otb" / otb_name(r.job.video_id, track) / "groundtruth_rect.txt",
                otb_lines(r, track),
            )


def write_davis_sets(root: Path, records: list[VideoRecord]) -> None:
    """``davis/ImageSets/2017/{train,val}.txt``: the sequences with frames and masks."""
    for split in SPLITS:
        names = [r.job.video_id for r in records if r.job.tracks and r.job.split == split]
        _write(root / "davis/ImageSets/2017" / f"{split}.txt", names)


def write_boxes(root: Path, records: list[VideoRecord]) -> None:
    """``boxes/<video_id>.csv``: every visible object's exact box in every frame.

    The per-video box-file layout of ``constcl.data.sources`` (``--boxes-dir OUT/boxes``):
    header ``frame_index,x1,y1,x2,y2,score,track_id,action_id``, 0-based frame index,
    normalised coordinates with four decimals, score 1. Rows only where the object shows
    ``MIN_VISIBLE`` pixels.
    """
    for r in records:
        lines = ["frame_index,x1,y1,x2,y2,score,track_id,action_id"]
        for frame in range(r.job.frames):
            for track in range(1, len(r.shapes) + 1):
                if r.visible(track, frame):
                    box = _norm_box(r.boxes[frame, track - 1], r.job.size)
                    act = action_id(r.action_at(track, frame))
                    lines.append(f"{frame},{_fmt(box, 4)},1.0,{track},{act}")
        _write(root / "boxes" / f"{r.job.video_id}.csv", lines)
