"""Train / test video lists of the action-recognition benchmarks (docs/evaluation.md section 1.4).

Three layouts, found under ``--data`` (``auto`` tries them in this order):

* **UCF101** ``ucfTrainTestlist/`` (or ``--data`` is that folder): ``classInd.txt``
  (``<1-based id> <Class>``), ``trainlist0N.txt`` (``<Class>/<file> <id>``),
  ``testlist0N.txt`` (``<Class>/<file>``, label from the folder part). CRLF line ends are
  stripped. Labels are ``id - 1``.
* **HMDB51** ``testTrainMulti_7030_splits/`` (or ``--data`` is that folder): one
  ``<class>_test_splitN.txt`` per class with ``<file> <tag>`` lines, tag 1 = train, 2 = test,
  0 = unused. Labels are indices of the sorted class names.
* **Kinetics** ``kinetics/`` (or ``--data`` is that folder) with ``train.csv`` and
  ``validate.csv`` (or ``val.csv`` / ``test.csv``), columns
  ``label,youtube_id,time_start,time_end,split``. Labels are indices of the sorted class names of
  the training CSV; test rows of other classes are dropped with a warning.

Video files are looked up under the videos folder (``--videos``; default the first of
``DATA/videos``, ``DATA/UCF-101``, ``DATA/hmdb51``, ``DATA`` that exists, where ``DATA`` is the
folder above the split folder) by **file name, case-insensitively**, which absorbs UCF101's
``HandstandPushups`` / ``v_HandStandPushups_*`` mismatch and the ``.avi`` vs re-encoded
``.mp4`` suffix (the stem is matched when the exact name is not found). Listed videos that are
not found are counted and logged, never silently mislabelled.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from constcl.data.sources import (
    VIDEO_EXTENSIONS,
    VideoItem,
    read_text,
    resolve_source,
    walk_files,
)
from constcl.errors import DataFileError

__all__ = ["LAYOUTS", "VideoSplits", "load_splits"]

log = logging.getLogger(__name__)

LAYOUTS = ("auto", "ucf101", "hmdb51", "kinetics")
_VIDEO_DIR_CANDIDATES = ("videos", "UCF-101", "UCF101", "hmdb51", "HMDB51")


@dataclass
class VideoSplits:
    """Labelled train and test videos of one split.

    ``files`` are the annotation files read (their contents enter feature-cache keys);
    ``missing`` counts listed videos without a file.
    """

    layout: str
    classes: list[str]
    train: list[VideoItem]
    test: list[VideoItem]
    files: list[Path] = field(default_factory=list)
    missing: int = 0


class _VideoIndex:
    """Video files under a folder, looked up by lower-case file name, then by stem."""

    def __init__(self, root: Path) -> None:
        paths = [p for p in walk_files(root) if p.suffix.lower() in VIDEO_EXTENSIONS]
        self.by_name = {p.name.lower(): p for p in paths}
        self.by_stem = {p.stem.lower(): p for p in paths}

    def find(self, listed: str) -> Path | None:
        name = Path(listed.strip().replace("\\", "/")).name.lower()
        return self.by_name.get(name) or self.by_stem.get(Path(name).stem)


def _lines(path: Path) -> list[tuple[int, str]]:
    """(line number, stripped text) of the non-empty lines; UTF-8 (DataFileError if not)."""
    text = read_text(path).replace("\r", "")
    return [(i, ln.strip()) for i, ln in enumerate(text.split("\n"), start=1) if ln.strip()]


def _class_ind(path: Path) -> dict[int, str]:
    """``classInd.txt``: ``{1-based id: class name}``."""
    ids: dict[int, str] = {}
    for lineno, ln in _lines(path):
        parts = ln.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise DataFileError(path, f"expected '<class id> <class name>', got {ln!r}", lineno)
        i = int(parts[0])
        if i in ids:
            raise DataFileError(path, f"class id {i} listed twice", lineno)
        ids[i] = parts[1]
    if not ids:
        raise DataFileError(path, "no classes listed")
    if sorted(ids) != list(range(1, len(ids) + 1)):
        raise DataFileError(path, f"class ids must be 1..{len(ids)}; got {sorted(ids)[:5]}...")
    return ids


def _videos_root(data_root: Path, videos: Path | None) -> Path:
    if videos is not None:
        return videos
    for name in _VIDEO_DIR_CANDIDATES:
        if (data_root / name).is_dir():
            return data_root / name
    return data_root


def _ucf101(folder: Path, split: int, videos: Path) -> VideoSplits:
    class_ind = folder / "classInd.txt"
    ids = _class_ind(class_ind)
    classes = [ids[i] for i in sorted(ids)]
    by_lower = {name.lower(): i - 1 for i, name in ids.items()}
    index = _VideoIndex(videos)
    train_file, test_file = folder / f"trainlist0{split}.txt", folder / f"testlist0{split}.txt"
    out = VideoSplits("ucf101", classes, [], [], [class_ind, train_file, test_file])
    for file, target in ((train_file, out.train), (test_file, out.test)):
        for lineno, line in _lines(file):
            parts = line.split()
            class_dir = parts[0].replace("\\", "/").split("/")[0]
            if len(parts) > 1:
                if not parts[1].isdigit() or not 1 <= int(parts[1]) <= len(classes):
                    raise DataFileError(file, f"class id {parts[1]!r} is not one of 1.."
                                              f"{len(classes)} of {class_ind.name}", lineno)
                label = int(parts[1]) - 1
            elif class_dir.lower() in by_lower:
                label = by_lower[class_dir.lower()]
            else:
                raise DataFileError(file, f"class folder {class_dir!r} of {parts[0]!r} is not "
                                          f"in {class_ind.name}", lineno)
            path = index.find(parts[0])
            if path is None:
                out.missing += 1
                continue
            target.append(VideoItem(path, label, classes[label]))
    return out


def _hmdb51(folder: Path, split: int, videos: Path) -> VideoSplits:
    files = sorted(folder.glob(f"*_test_split{split}.txt"))
    suffix = f"_test_split{split}.txt"
    classes = [f.name[: -len(suffix)] for f in files]
    index = _VideoIndex(videos)
    out = VideoSplits("hmdb51", classes, [], [], files)
    for label, file in enumerate(files):
        for lineno, line in _lines(file):
            fields = line.split()
            if len(fields) < 2:
                raise DataFileError(file, f"expected '<video file> <tag 0, 1 or 2>', got "
                                          f"{line!r}", lineno)
            name, tag = fields[:2]
            if tag not in ("1", "2"):
                continue
            path = index.find(name)
            if path is None:
                out.missing += 1
                continue
            (out.train if tag == "1" else out.test).append(VideoItem(path, label, classes[label]))
    return out


def _kinetics(folder: Path, videos: Path) -> VideoSplits:
    train_csv = folder / "train.csv"
    test_csv = next((folder / n for n in ("validate.csv", "val.csv", "test.csv")
                     if (folder / n).is_file()), None)
    if test_csv is None:
        raise FileNotFoundError(f"{folder}: no validate.csv, val.csv or test.csv")
    train, missing_train = resolve_source(train_csv, videos)
    test, missing_test = resolve_source(test_csv, videos)
    classes = sorted({i.label_name for i in train if i.label_name})
    pos = {name: i for i, name in enumerate(classes)}
    unknown = [i for i in test if i.label_name not in pos]
    if unknown:
        log.warning("%d test videos have classes absent from training; dropped", len(unknown))
    out = VideoSplits("kinetics", classes, [], [], [train_csv, test_csv],
                      len(missing_train) + len(missing_test))
    out.train = [VideoItem(i.path, pos[i.label_name], i.label_name) for i in train
                 if i.label_name in pos]
    out.test = [VideoItem(i.path, pos[i.label_name], i.label_name) for i in test
                if i.label_name in pos]
    return out


def _detect(data: Path, wanted: str) -> tuple[str, Path]:
    """(layout, split folder) found under ``data``; ``wanted`` is a layout or ``auto``."""
    checks = (("ucf101", "ucfTrainTestlist", "classInd.txt"),
              ("hmdb51", "testTrainMulti_7030_splits", "*_test_split*.txt"),
              ("kinetics", "kinetics", "train.csv"))
    for layout, sub, marker in checks:
        if wanted not in ("auto", layout):
            continue
        for folder in (data, data / sub):
            if folder.is_dir() and any(folder.glob(marker)):
                return layout, folder
    raise FileNotFoundError(f"{data}: no {wanted} split files; looked for UCF101 "
                            f"(ucfTrainTestlist/classInd.txt), HMDB51 "
                            f"(testTrainMulti_7030_splits/) and Kinetics (kinetics/train.csv)")


def load_splits(data: str | Path, layout: str = "auto", split: int = 1,
                videos: str | Path | None = None) -> VideoSplits:
    """Read a benchmark's train and test lists (see the module docstring).

    Args:
        data: data-set root or split folder.
        layout: one of ``LAYOUTS``.
        split: official split number (1-3) for UCF101 / HMDB51; ignored for Kinetics.
        videos: folder holding the video files (default: see the module docstring).
    """
    data = Path(data)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    found, folder = _detect(data, layout)
    root = folder.parent if folder != data else data
    video_root = _videos_root(root, Path(videos) if videos is not None else None)
    if found == "ucf101":
        out = _ucf101(folder, split, video_root)
    elif found == "hmdb51":
        out = _hmdb51(folder, split, video_root)
    else:
        out = _kinetics(folder, video_root)
    if out.missing:
        log.warning("%d listed videos were not found under %s", out.missing, video_root)
    if not out.train or not out.test:
        raise ValueError(f"{data}: empty split ({len(out.train)} train, {len(out.test)} test)")
    log.info("%s split %d: %d classes, %d train, %d test videos", out.layout, split,
             len(out.classes), len(out.train), len(out.test))
    return out
