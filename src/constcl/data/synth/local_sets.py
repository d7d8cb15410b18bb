"""Local sets v3: tracking and propagation sequences that need learned correspondence.

The v2 sets (the val videos' always-visible tracks and masks) can be solved from low-level
cues: their objects differ in size, colour and texture, so a random network's features tell
the target from everything else. A v3 sequence is rendered on its own (the world's videos stay
byte-identical) with look-alike instances: 3-4 objects of one size, one texture pattern and one
colour pair, told apart only by shape; every other object crosses the target's path, often in
front of it; the shared colours drift over the sequence, every object rotates and changes
scale, and the background pans fast. ``docs/synthetic_world.md`` ("Local sets v3") has the
design and the acceptance criterion, both fixed before any number on these sets was seen.

Layout under ``OUT`` (the world's own layouts, so ``eval track`` / ``eval propagate`` read it
as they read the world's sets)::

    summary.json                          parameters, names, "complete": true (written last)
    otb/L<i>_<Shape>/img/0001.jpg ...     groundtruth_rect.txt (object 1, the target)
    davis/JPEGImages/480p/L<i>_<Shape>/00000.jpg ...
    davis/Annotations/480p/L<i>_<Shape>/00000.png ...   (every object)
    davis/ImageSets/2017/val.txt          every sequence; train.txt is empty
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from constcl.data.palette import write_palette_masks
from constcl.data.synth import appearance, media
from constcl.data.synth.render import render, visible_boxes
from constcl.data.synth.scene import ObjectTrack, Scene
from constcl.data.synth.taxonomy import SHAPES
from constcl.data.synth.video import MIN_VISIBLE
from constcl.data.synth.world import SUMMARY, prepare_folder
from constcl.runlock import run_lock

log = logging.getLogger(__name__)

VERSION = "v3"
STREAM = 7  # sequence i draws from SeedSequence([seed, STREAM, i]): apart from the videos'
RADIUS = (0.13, 0.17)  # every object's base radius, as a fraction of the frame
OBJECTS = (3, 4)  # objects per sequence (inclusive)
HUE_TURNS = (1.0, 1.5)  # shared colours' hue cycle over the sequence (world v2: 0.6-1.0)
SPIN = 4.0  # degrees per frame, at most
SCALE_CHANGE = (0.7, 1.4)  # each object's size factor from the first to the last frame
CAMERA_SPEED = (0.5, 1.0)  # pixels per frame at 128 px
TARGET_TRAVEL = (0.35, 0.6)  # the target's start-to-end distance, as a fraction of the frame
CROSSING = (0.25, 0.75)  # when a distractor meets the target, as a fraction of the sequence
DISTRACTOR_SPEED = (0.8, 3.0)  # pixels per frame at 128 px
MAX_TRIES = 50


@dataclass(frozen=True)
class LocalSetParams:
    """Everything that determines a v3 set's content (the worker count does not)."""

    sequences: int = 64
    seed: int = 0
    size: int = 128
    frames: int = 64
    version: str = VERSION

    def check(self) -> None:
        """Raise ``ValueError`` naming the parameter the sets cannot take."""
        if self.sequences < 1:
            raise ValueError(f"sequences must be at least 1; got {self.sequences}")
        if self.size < 64 or self.size % 2:
            raise ValueError(f"size must be even and at least 64; got {self.size}")
        if self.frames < 16:
            raise ValueError(f"frames must be at least 16; got {self.frames}")


def sequence_name(index: int, shape: str) -> str:
    """OTB / DAVIS name of sequence ``index`` whose target has ``shape``."""
    return f"L{index:03d}_{shape.capitalize()}"


def _camera(rng: np.random.Generator, frames: int, unit: float) -> tuple[np.ndarray, int]:
    """Integer (row, col) view offsets of a constant-velocity pan, and the canvas padding."""
    speed = rng.uniform(*CAMERA_SPEED) * unit
    heading = rng.uniform(0, 2 * np.pi)
    travel = speed * np.array([np.sin(heading), np.cos(heading)])[None] \
        * np.arange(frames)[:, None]
    pad = int(np.ceil(CAMERA_SPEED[1] * unit * frames)) + 2
    start = np.where(travel[-1] < 0, pad - 1, 1)
    return np.rint(start[None] + travel).astype(np.int64), pad


def _looks(rng: np.random.Generator, frames: int) -> tuple[float, np.ndarray, np.ndarray]:
    """The size, texture and per-frame colours every object of a sequence shares."""
    texture = appearance.object_texture(rng, appearance.OBJECT_TEXTURE)
    colours = appearance.cycling_colours(rng, frames, cycle=HUE_TURNS)
    return float(rng.uniform(*RADIUS)), texture, colours


def _turn_and_scale(rng: np.random.Generator, frames: int) -> tuple[np.ndarray, np.ndarray]:
    t = np.arange(frames, dtype=np.float64)
    angle = rng.uniform(0, 2 * np.pi) + np.deg2rad(rng.uniform(-SPIN, SPIN)) * t
    scale = np.exp(np.log(rng.uniform(*SCALE_CHANGE)) * t / max(frames - 1, 1))
    return angle, scale


def _target_path(rng: np.random.Generator, size: int, frames: int, margin: float
                 ) -> np.ndarray:
    """(frames, 2) x, y of the target: a line across the frame with a gentle sideways wave."""
    lo, hi = margin, size - margin
    for _ in range(MAX_TRIES):
        start, end = rng.uniform(lo, hi, size=2), rng.uniform(lo, hi, size=2)
        if np.linalg.norm(end - start) >= TARGET_TRAVEL[0] * size:
            break
    t = np.linspace(0.0, 1.0, frames)[:, None]
    along = end - start
    side = np.array([-along[1], along[0]]) / max(np.linalg.norm(along), 1e-6)
    wave = rng.uniform(0.02, 0.06) * size * np.sin(2 * np.pi * rng.uniform(0.5, 1.5) * t)
    return start + along * t + side * wave


def _crossing_path(rng: np.random.Generator, target: np.ndarray, size: int, radius: float,
                   when: int, unit: float) -> np.ndarray:
    """(frames, 2) x, y of a distractor that starts in the frame and passes within half a radius
    of the target at frame ``when``, at a constant speed within ``DISTRACTOR_SPEED``."""
    frames = len(target)
    meet = target[when] + rng.uniform(-0.5, 0.5, size=2) * radius
    lo, hi = 0.6 * radius, size - 0.6 * radius
    start = rng.uniform(lo, hi, size=2)
    for _ in range(MAX_TRIES):
        speed = np.linalg.norm(meet - start) / max(when, 1)
        if DISTRACTOR_SPEED[0] * unit <= speed <= DISTRACTOR_SPEED[1] * unit:
            break
        start = rng.uniform(lo, hi, size=2)
    velocity = (meet - start) / max(when, 1)
    return start[None] + velocity[None] * np.arange(frames)[:, None]


def sample_local_scene(rng: np.random.Generator, size: int, frames: int) -> Scene:
    """One v3 scene: object 1 is the target; every object has the same size, texture and
    colours and a distinct shape; the others cross the target's path; the background pans
    under them (the objects' image paths are drawn as they are seen)."""
    unit = size / 128.0
    pan, pad = _camera(rng, frames, unit)
    background = appearance.background_canvas(rng, size + pad, size + pad)
    radius_fraction, texture, colours = _looks(rng, frames)
    radius = radius_fraction * size
    count = int(rng.integers(OBJECTS[0], OBJECTS[1] + 1))
    shapes = [str(s) for s in rng.choice(SHAPES, size=count, replace=False)]
    # the whole target stays in frame at its largest (shapes reach EXTENT radii)
    target = _target_path(rng, size, frames,
                          margin=appearance.EXTENT * radius * SCALE_CHANGE[1])
    whens = np.sort(rng.uniform(*CROSSING, size=count - 1) * (frames - 1)).astype(int)
    paths = [target] + [_crossing_path(rng, target, size, radius, int(w), unit) for w in whens]
    objects = []
    for k, (shape, path) in enumerate(zip(shapes, paths, strict=True)):
        angle, scale = _turn_and_scale(rng, frames)
        poses = np.column_stack([path, angle, scale])
        objects.append(ObjectTrack(k + 1, shape, texture, colours, radius, 0, poses, []))
    for depth, index in enumerate(rng.permutation(count)):
        objects[int(index)].depth = depth
    return Scene(size, frames, background, pan, objects)


def _acceptable(labels: np.ndarray, count: int) -> bool:
    """The target shows at least MIN_VISIBLE pixels in every frame (OTB has no 'absent' flag)
    and every object shows them in the first frame (DAVIS takes its objects from it)."""
    _, pixels = visible_boxes(labels, count)
    return bool((pixels[:, 0] >= MIN_VISIBLE).all() and (pixels[0] >= MIN_VISIBLE).all())


@dataclass(frozen=True)
class SequenceJob:
    root: str
    index: int
    seed: int
    size: int
    frames: int


def make_sequence(job: SequenceJob) -> str:
    """Render sequence ``job.index``, write its OTB and DAVIS files; return its name."""
    rng = np.random.default_rng(np.random.SeedSequence([job.seed, STREAM, job.index]))
    for _ in range(MAX_TRIES):
        scene = sample_local_scene(rng, job.size, job.frames)
        rgb, labels = render(scene)
        if _acceptable(labels, len(scene.objects)):
            break
    else:
        raise RuntimeError(f"local set sequence {job.index}: no acceptable scene in "
                           f"{MAX_TRIES} draws")
    root = Path(job.root)
    name = sequence_name(job.index, scene.objects[0].shape)
    jpegs = media.write_jpegs(root / "davis/JPEGImages/480p" / name, rgb, "%05d.jpg", 0)
    write_palette_masks(root / "davis/Annotations/480p" / name, labels)
    media.link_files(jpegs, root / "otb" / name / "img", "%04d.jpg", 1)
    boxes, _ = visible_boxes(labels, len(scene.objects))
    rows = [f"{x1 + 1},{y1 + 1},{x2 - x1},{y2 - y1}" for x1, y1, x2, y2 in boxes[:, 0]]
    (root / "otb" / name / "groundtruth_rect.txt").write_text("\n".join(rows) + "\n")
    return name


def _load(root: Path) -> dict | None:
    try:
        return json.loads((root / SUMMARY).read_text())
    except (OSError, ValueError):
        return None


def generate_local_sets(out_dir: str | os.PathLike[str], sequences: int = 64, seed: int = 0,
                        size: int = 128, frames: int = 64, workers: int | None = None) -> Path:
    """Write (or reuse) the v3 local sets in ``out_dir``; returns ``out_dir``.

    A folder whose ``summary.json`` is complete with the same parameters is reused as it is;
    other parameters regenerate it (only its own entries are deleted); a non-empty folder
    without a summary is never overwritten.
    """
    root = Path(out_dir)
    params = LocalSetParams(sequences, seed, size, frames)
    params.check()
    old = _load(root)
    if old and old.get("complete") and old.get("params") == asdict(params):
        return root
    with run_lock(root, "constcl data synth --local-sets"):
        old = _load(root)
        if old and old.get("complete") and old.get("params") == asdict(params):
            return root
        prepare_folder(root, ("otb", "davis"))
        jobs = [SequenceJob(str(root), i, seed, size, frames) for i in range(sequences)]
        workers = max(1, min(workers or os.cpu_count() or 1, sequences))
        if workers == 1:
            names = [make_sequence(job) for job in jobs]
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                names = pool.map(make_sequence, jobs, chunksize=1)
        sets = root / "davis/ImageSets/2017"
        sets.mkdir(parents=True, exist_ok=True)
        (sets / "val.txt").write_text("\n".join(names) + "\n")
        (sets / "train.txt").write_text("")
        summary = {"params": asdict(params), "sequences": names, "complete": True}
        tmp = root / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(summary, indent=2))
        os.replace(tmp, root / SUMMARY)
        log.info("local sets %s: %d sequences in %s", VERSION, sequences, root)
    return root
