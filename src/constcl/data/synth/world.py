"""Orchestration of the synthetic world: plan videos, render them in parallel, write files.

``generate_world`` is the entry point for the CLI, the demo, tests and benchmarks. A world is
identified by its :class:`WorldParams`; ``summary.json`` records them together with the class
list and counts, and is written last with ``"complete": true``, so a second call with the same
parameters returns at once and an interrupted run is redone from scratch.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from constcl.data.synth import formats
from constcl.data.synth.taxonomy import ACTIONS, class_table
from constcl.data.synth.video import VideoJob, VideoRecord, make_video
from constcl.runlock import LOCK_NAME, run_lock

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when the content or layout changes, so old worlds are regenerated
SUMMARY = "summary.json"
OWNED = (
    "videos",
    "videos.csv",
    "kinetics",
    "slowfast",
    formats.UCF_DIR,
    "ava",
    "otb",
    "davis",
    "boxes",
)  # the entries of a world folder that a regeneration deletes
TRACK_CHOICES = ("val", "all", "none")
VAL_EVERY = 5  # one video in five goes to the val split (balanced across classes)
CLIPS_PER_GROUP = 4  # UCF-style video ids v_<Class>_g<group>_c<clip>


@dataclass(frozen=True)
class WorldParams:
    """Everything that determines a world's content (worker count does not)."""

    num_videos: int
    seed: int
    size: int = 128
    frames: int = 64
    fps: int = 25
    tracks: str = "val"  # which split gets DAVIS frames/masks and OTB sequences: val, all, none

    def check(self) -> None:
        """Raise ``ValueError`` on parameters the encoder or the layouts cannot take."""
        if self.num_videos < 1:
            raise ValueError("num_videos must be at least 1")
        if self.size < 32 or self.size % 2:
            raise ValueError("size must be even and at least 32 (H.264 yuv420p)")
        if self.frames < 2 or self.fps < 1:
            raise ValueError("need frames >= 2 and fps >= 1")
        if self.tracks not in TRACK_CHOICES:
            raise ValueError(f"tracks must be one of {TRACK_CHOICES}")


@dataclass
class WorldSummary:
    """What a world holds: its parameters, class and action names, and file counts."""

    root: Path
    params: WorldParams
    classes: list[str]
    actions: list[str]
    counts: dict[str, Any]
    complete: bool = True
    seconds: float = field(default=0.0, compare=False)  # generation time; 0 when reused
    reused: bool = field(default=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """The ``summary.json`` content (no timing, so the file is reproducible)."""
        return {
            "format": "constcl-synth",
            "version": FORMAT_VERSION,
            "complete": self.complete,
            "params": asdict(self.params),
            "classes": self.classes,
            "actions": self.actions,
            "counts": self.counts,
        }

    @classmethod
    def load(cls, root: Path) -> WorldSummary | None:
        """Read ``root/summary.json``; ``None`` if missing, unreadable or another version."""
        try:
            data = json.loads((root / SUMMARY).read_text())
            if data.get("version") != FORMAT_VERSION:
                return None
            params = WorldParams(**data["params"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(
            root, params, data["classes"], data["actions"], data["counts"], bool(data["complete"])
        )

    def save(self) -> None:
        """Write ``summary.json``."""
        text = json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"
        (self.root / SUMMARY).write_text(text)

    @property
    def video_index(self) -> Path:
        """``videos.csv``: ``video_id,path,label,class_name,split,num_objects``."""
        return self.root / "videos.csv"


def plan_jobs(root: Path, params: WorldParams) -> list[VideoJob]:
    """One job per video: classes round-robin then shuffled with the seed, ids and splits.

    Within a class the ``k``-th video is ``v_<Class>_g<k // 4 + 1>_c<k % 4 + 1>``; it goes to
    val when ``(k + class_index) % 5 == 4``, so about a fifth of each class is val and even a
    12-video world has a val split.
    """
    table = class_table()
    rng = np.random.default_rng(np.random.SeedSequence([params.seed]))
    order = rng.permutation(params.num_videos) % len(table)
    seen: Counter[int] = Counter()
    jobs = []
    for index, label in enumerate(int(c) for c in order):
        name, shape, family = table[label]
        k = seen[label]
        seen[label] += 1
        group, clip = k // CLIPS_PER_GROUP + 1, k % CLIPS_PER_GROUP + 1
        split = "val" if (k + label) % VAL_EVERY == VAL_EVERY - 1 else "train"
        tracks = params.tracks == "all" or (params.tracks == split == "val")
        jobs.append(
            VideoJob(
                str(root),
                index,
                f"v_{name}_g{group:02d}_c{clip:02d}",
                name,
                label,
                shape,
                family,
                split,
                params.seed,
                params.size,
                params.frames,
                params.fps,
                tracks,
            )
        )
    return jobs


def _render_all(jobs: list[VideoJob], workers: int) -> list[VideoRecord]:
    """Run ``make_video`` over the jobs, in a spawn-based process pool when ``workers > 1``."""
    records: list[VideoRecord] = []
    step = max(25, len(jobs) // 10)
    if workers <= 1:
        iterator = map(make_video, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("spawn").Pool(workers)
        iterator = pool.imap_unordered(make_video, jobs, chunksize=4)
    try:
        for record in iterator:
            records.append(record)
            if len(records) % step == 0:
                log.info("synth: %d/%d videos", len(records), len(jobs))
    except BaseException:  # Ctrl-C, SIGTERM, an error: stop the workers now, not after the rest
        if pool is not None:
            pool.terminate()
        raise
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return sorted(records, key=lambda r: r.job.index)


def _counts(records: list[VideoRecord], fps: int) -> dict[str, Any]:
    """Per-split and per-class counts of videos and annotations for ``summary.json``."""
    per_class = Counter(r.job.class_name for r in records)
    counts: dict[str, Any] = {
        "videos": len(records),
        "objects": sum(len(r.shapes) for r in records),
        "per_class": dict(sorted(per_class.items())),
        "otb_sequences": sum(len(r.otb_tracks) for r in records),
        "davis_sequences": sum(r.job.tracks for r in records),
    }
    for split in formats.SPLITS:
        rows = [r for r in records if r.job.split == split]
        counts[f"{split}_videos"] = len(rows)
        counts[f"ava_{split}_rows"] = sum(len(formats.ava_rows(r, fps)) for r in rows)
    return counts


def _available_cpus() -> int:
    """CPUs this process may run on (the affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def split_videos(root: Path, split: str) -> list[dict[str, str]]:
    """The ``videos.csv`` rows of a world's ``split`` (``train`` or ``val``), in file order:
    ``video_id, path`` (relative to ``root``), ``label, class_name, split, num_objects``."""
    from constcl.data.sources import read_csv_rows

    _, rows = read_csv_rows(Path(root) / "videos.csv")
    return [row for _, row in rows if row.get("split") == split]


def prepare_folder(root: Path, owned: tuple[str, ...] = OWNED) -> None:
    """Empty a previous generation's ``owned`` entries and ``summary.json`` in ``root``;
    refuse to touch a non-empty folder without a summary (not one of ours). The world and the
    local sets (``local_sets.py``) both use it."""
    if root.exists() and any(p.name != LOCK_NAME for p in root.iterdir()):
        if not (root / SUMMARY).exists():
            raise FileExistsError(f"{root} is not empty and holds no {SUMMARY}; not overwriting")
        for name in (*owned, SUMMARY):
            path = root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _write_annotations(root: Path, records: list[VideoRecord], params: WorldParams) -> None:
    classes = [name for name, _, _ in class_table()]
    formats.write_video_index(root, records)
    formats.write_kinetics(root, records, params.frames, params.fps)
    formats.write_ucf(root, records, classes)
    formats.write_ava(root, records, params.fps)
    formats.write_boxes(root, records)
    if params.tracks != "none":
        formats.write_otb(root, records)
        formats.write_davis_sets(root, records)


def generate_world(
    out_dir: str | os.PathLike[str],
    num_videos: int,
    seed: int,
    size: int = 128,
    frames: int = 64,
    fps: int = 25,
    workers: int | None = None,
    tracks: str = "val",
    force: bool = False,
) -> WorldSummary:
    """Generate (or reuse) the synthetic world in ``out_dir``; return its summary.

    ``workers`` defaults to the CPUs available to this process. ``tracks`` picks the split
    that also gets DAVIS frames/masks and OTB sequences (``val``, ``all`` or ``none``). If
    ``out_dir`` already holds a complete world with the same parameters it is returned as is,
    unless ``force``.
    """
    root = Path(out_dir)
    params = WorldParams(num_videos, seed, size, frames, fps, tracks)
    params.check()
    existing = WorldSummary.load(root)
    if existing is not None and existing.complete and existing.params == params and not force:
        existing.reused = True
        return existing
    start = time.perf_counter()
    with run_lock(root, "constcl data synth"):  # one writer per folder (runlock.py)
        existing = WorldSummary.load(root)  # another process may have just finished it
        if existing is not None and existing.complete and existing.params == params \
                and not force:
            existing.reused = True
            return existing
        prepare_folder(root)
        classes = [name for name, _, _ in class_table()]
        summary = WorldSummary(root, params, classes, list(ACTIONS), {}, complete=False)
        summary.save()
        jobs = plan_jobs(root, params)
        workers = workers or _available_cpus()
        records = _render_all(jobs, min(workers, len(jobs)))
        _write_annotations(root, records, params)
        summary.counts = _counts(records, fps)
        summary.complete = True
        summary.save()
    summary.seconds = time.perf_counter() - start
    log.info("synth: %d videos in %s (%.1f s)", num_videos, root, summary.seconds)
    return summary
