"""Sampling one synthetic video's scene: background, objects, their looks and their tracks.

Object 1 is the MAIN object: the largest one at every frame (its base radius is at least twice
any other's and scales stay within ``SCALE_RANGE``), with the class's shape and every motion
segment drawn from the class's motion family. Objects 2-4 are distractors with any shape and
any motion type. Depth order is random, so the main object may be partly hidden, and a small
distractor may disappear behind a larger object for a while.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from constcl.data.synth import appearance, motion
from constcl.data.synth.taxonomy import ACTIONS, FAMILIES, SHAPES

SCALE_RANGE = (0.75, 1.35)  # size multiplier range of every object over time
MAIN_RADIUS = (0.20, 0.25)  # main object's base radius, as a fraction of the frame size
DISTRACTOR_RADIUS = (0.35, 0.5)  # distractor base radius, as a fraction of the main radius
PAN_SPEED = (0.15, 0.5)  # background pan in pixels per frame (128-pixel frame)


@dataclass
class ObjectTrack:
    """One object: looks (shape, texture, colours per frame) and per-frame poses."""

    track_id: int
    shape: str
    texture: np.ndarray  # (TEXTURE_SIZE, TEXTURE_SIZE) blend weights in [0, 1]
    colours: np.ndarray  # (frames, 2, 3) RGB in [0, 255]
    radius: float  # base radius in pixels; the drawn radius is radius * poses[:, 3]
    depth: int  # 0 is the front-most object
    poses: np.ndarray  # (frames, 4): x, y (pixel centre), angle (rad), scale
    segments: list[motion.Segment]

    def action_at(self, frame: int) -> str:
        """The motion type of the segment containing ``frame``."""
        for seg in self.segments:
            if seg.start <= frame < seg.end:
                return seg.action
        raise IndexError(frame)


@dataclass
class Scene:
    """Everything needed to render one video deterministically."""

    size: int
    frames: int
    background: np.ndarray  # (size + pad, size + pad, 3) canvas in [0, 255]
    pan: np.ndarray  # (frames, 2) integer (row, col) offsets of the view into the canvas
    objects: list[ObjectTrack]  # ordered by track id (1, 2, ...)


def _pan_offsets(rng: np.random.Generator, frames: int, unit: float) -> tuple[np.ndarray, int]:
    """Integer view offsets of a slow constant-velocity pan, and the canvas padding needed."""
    speed = rng.uniform(*PAN_SPEED) * unit
    heading = rng.uniform(0, 2 * np.pi)
    travel = speed * np.array([np.sin(heading), np.cos(heading)])[None] * np.arange(frames)[:, None]
    pad = int(math.ceil(PAN_SPEED[1] * unit * frames)) + 2
    start = np.where(travel[-1] < 0, pad - 1, 1)
    return np.rint(start[None] + travel).astype(np.int64), pad


def _object(
    rng: np.random.Generator,
    track_id: int,
    shape: str,
    radius: float,
    choices: tuple[str, ...],
    size: int,
    frames: int,
) -> ObjectTrack:
    """Sample one object's looks and track; ``depth`` is filled in by the caller."""
    unit = size / 128.0
    bounds = motion.Bounds(0.6 * radius, size - 0.6 * radius, *SCALE_RANGE)
    start = np.array([*rng.uniform(bounds.lo, bounds.hi, size=2), rng.uniform(0, 2 * np.pi), 1.0])
    poses, segments = motion.track_poses(rng, frames, choices, start, bounds, unit)
    texture = appearance.object_texture(rng, appearance.OBJECT_TEXTURE)
    colours = appearance.cycling_colours(rng, frames)
    return ObjectTrack(track_id, shape, texture, colours, radius, 0, poses, segments)


def sample_scene(
    rng: np.random.Generator, shape: str, family: str, size: int, frames: int
) -> Scene:
    """Sample a scene whose main object has ``shape`` and moves with motions of ``family``."""
    unit = size / 128.0
    pan, pad = _pan_offsets(rng, frames, unit)
    background = appearance.background_canvas(rng, size + pad, size + pad)
    main_radius = rng.uniform(*MAIN_RADIUS) * size
    objects = [_object(rng, 1, shape, main_radius, FAMILIES[family], size, frames)]
    for track_id in range(2, int(rng.integers(2, 5)) + 1):
        radius = rng.uniform(*DISTRACTOR_RADIUS) * main_radius
        other = str(rng.choice(SHAPES))
        objects.append(_object(rng, track_id, other, radius, ACTIONS, size, frames))
    for depth, index in enumerate(rng.permutation(len(objects))):
        objects[int(index)].depth = depth
    return Scene(size, frames, background, pan, objects)
