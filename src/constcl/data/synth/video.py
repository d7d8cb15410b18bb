"""One synthetic video, end to end: sample, render, write media, return its ground truth.

This is the unit of work of the process pool. A video's content depends only on the world seed
and its index, never on the number of workers or the order the pool runs jobs in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from constcl.data.palette import write_palette_masks
from constcl.data.synth import media
from constcl.data.synth.render import render, visible_boxes
from constcl.data.synth.scene import Scene, sample_scene

MIN_VISIBLE = 16  # pixels; below this an object counts as not visible (no AVA row / OTB track)
MAX_SCENE_TRIES = 20


@dataclass(frozen=True)
class VideoJob:
    """What a worker needs to make one video; ``root`` is the world's output folder."""

    root: str
    index: int
    video_id: str
    class_name: str
    label: int  # 0-based index of class_name in the sorted class list
    shape: str
    family: str
    split: str
    seed: int
    size: int
    frames: int
    fps: int
    tracks: bool  # also write DAVIS frames/masks and OTB sequences for this video

    @property
    def video_path(self) -> str:
        """Path of the mp4 relative to the world root (posix)."""
        return f"videos/{self.class_name}/{self.video_id}.mp4"


@dataclass
class VideoRecord:
    """Ground truth of one rendered video, returned by a worker to the writer of annotations.

    ``boxes`` is ``(frames, objects, 4)`` tight pixel boxes ``x1, y1, x2, y2`` (exclusive end)
    of each object's visible pixels, ``pixels`` the visible pixel counts, ``segments`` per
    track the ``(start, end, action)`` motion segments. Track ``k`` is column ``k - 1``.
    """

    job: VideoJob
    shapes: list[str]
    depths: list[int]
    segments: list[list[tuple[int, int, str]]]
    boxes: np.ndarray
    pixels: np.ndarray
    otb_tracks: list[int] = field(default_factory=list)

    @property
    def label(self) -> int:
        """0-based class label."""
        return self.job.label

    def action_at(self, track: int, frame: int) -> str:
        """Motion type of track ``track`` (1-based) at ``frame``."""
        for start, end, action in self.segments[track - 1]:
            if start <= frame < end:
                return action
        raise IndexError(frame)

    def visible(self, track: int, frame: int) -> bool:
        """Whether track ``track`` shows at least ``MIN_VISIBLE`` pixels at ``frame``."""
        return bool(self.pixels[frame, track - 1] >= MIN_VISIBLE)


def _scene_for(job: VideoJob) -> tuple[Scene, np.ndarray, np.ndarray]:
    """Sample and render a scene in which every object is visible in the first frame.

    DAVIS semi-supervised evaluation takes its objects from the first frame's mask, so scenes
    with an object hidden at frame 0 are redrawn (rare; the draw stays deterministic).
    """
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, job.index]))
    for _ in range(MAX_SCENE_TRIES):
        scene = sample_scene(rng, job.shape, job.family, job.size, job.frames)
        rgb, labels = render(scene)
        first = np.bincount(labels[0].ravel(), minlength=len(scene.objects) + 1)[1:]
        if (first >= MIN_VISIBLE).all():
            break
    return scene, rgb, labels


def make_video(job: VideoJob) -> VideoRecord:
    """Render the video of ``job``, write its mp4 (and DAVIS/OTB media), return its record."""
    root = Path(job.root)
    scene, rgb, labels = _scene_for(job)
    boxes, pixels = visible_boxes(labels, len(scene.objects))
    media.write_mp4(root / job.video_path, rgb, job.fps)
    record = VideoRecord(
        job=job,
        shapes=[o.shape for o in scene.objects],
        depths=[o.depth for o in scene.objects],
        segments=[[(s.start, s.end, s.action) for s in o.segments] for o in scene.objects],
        boxes=boxes,
        pixels=pixels,
    )
    if job.tracks:
        _write_tracks(root, record, rgb, labels)
    return record


def _write_tracks(root: Path, record: VideoRecord, rgb: np.ndarray, labels: np.ndarray) -> None:
    """DAVIS-2017 frames and masks, and one OTB image folder per always-visible track."""
    vid = record.job.video_id
    jpegs = media.write_jpegs(root / "davis/JPEGImages/480p" / vid, rgb, "%05d.jpg", 0)
    write_palette_masks(root / "davis/Annotations/480p" / vid, labels)
    for track in range(1, record.pixels.shape[1] + 1):
        if (record.pixels[:, track - 1] >= MIN_VISIBLE).all():
            media.link_files(jpegs, root / "otb" / otb_name(vid, track) / "img", "%04d.jpg", 1)
            record.otb_tracks.append(track)


def otb_name(video_id: str, track: int) -> str:
    """OTB sequence folder name of one object track."""
    return f"{video_id}_obj{track}"
