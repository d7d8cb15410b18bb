"""Object motion: time segments with one motion type each, turned into per-frame poses.

A pose is ``(x, y, angle, scale)``: centre in pixels, rotation in radians and a size multiplier
of the object's base radius. Every segment starts from the pose the previous one ended in, so
trajectories are continuous. Speeds are given for a 128-pixel frame and scale with the frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SEGMENT = 16  # frames; shorter segments would make the motion type hard to see
MAX_SEGMENTS = 3
GROW_FACTOR = 1.45  # a grow (shrink) segment multiplies (divides) the scale by up to this


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, end)`` of an object's track move with motion type ``action``."""

    start: int
    end: int
    action: str


@dataclass(frozen=True)
class Bounds:
    """Allowed range of an object's centre and scale."""

    lo: float
    hi: float
    scale_min: float
    scale_max: float


def segment_bounds(rng: np.random.Generator, frames: int) -> list[tuple[int, int]]:
    """Split ``[0, frames)`` into 1-3 contiguous segments of at least ``MIN_SEGMENT`` frames."""
    most = max(1, min(MAX_SEGMENTS, frames // MIN_SEGMENT))
    count = int(rng.integers(1, most + 1))
    slack = frames - count * MIN_SEGMENT
    cuts = np.sort(rng.integers(0, slack + 1, size=count - 1)) if count > 1 else np.array([])
    edges = [0] + [int(c) + MIN_SEGMENT * (i + 1) for i, c in enumerate(cuts)] + [frames]
    return list(zip(edges[:-1], edges[1:], strict=True))


def pick_action(
    rng: np.random.Generator,
    choices: tuple[str, ...],
    previous: str | None,
    scale: float,
    bounds: Bounds,
) -> str:
    """Draw a motion type from ``choices``, avoiding a repeat and grow/shrink past the limits."""
    allowed = [a for a in choices if a != previous or len(choices) == 1]
    if scale * 1.15 > bounds.scale_max and "grow" in allowed and len(allowed) > 1:
        allowed.remove("grow")
    if scale / 1.15 < bounds.scale_min and "shrink" in allowed and len(allowed) > 1:
        allowed.remove("shrink")
    return str(allowed[int(rng.integers(len(allowed)))])


def _fold(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect an unbounded coordinate into ``[lo, hi]`` (a ball bouncing off two walls)."""
    span = hi - lo
    y = np.mod(x - lo, 2 * span)
    return lo + span - np.abs(y - span)


def _straight_target(
    rng: np.random.Generator, start: np.ndarray, length: int, bounds: Bounds, unit: float
) -> np.ndarray:
    """A target point inside the bounds at a distance of 0.8-1.6 px per frame (128-px frame)."""
    best, best_dist = start, -1.0
    for _ in range(20):
        target = rng.uniform(bounds.lo, bounds.hi, size=2)
        dist = float(np.hypot(*(target - start)))
        if 0.8 * unit * length <= dist <= 1.6 * unit * length:
            return target
        if dist > best_dist:
            best, best_dist = target, dist
    return best


def _translate(
    rng: np.random.Generator,
    action: str,
    start: np.ndarray,
    steps: np.ndarray,
    bounds: Bounds,
    unit: float,
) -> np.ndarray:
    """Centre positions ``(len(steps), 2)`` for the translating motion types."""
    n = len(steps)
    if action == "straight" or action == "zigzag":
        target = _straight_target(rng, start, n, bounds, unit)
        pos = start + (target - start)[None] * (steps / n)[:, None]
        if action == "zigzag":
            direction = (target - start) / max(float(np.hypot(*(target - start))), 1e-6)
            normal = np.array([-direction[1], direction[0]])
            amp, period = rng.uniform(5.0, 9.0) * unit, rng.uniform(10.0, 18.0)
            wave = amp * (2 * np.abs(2 * ((steps / period) % 1.0) - 1) - 1)
            pos = pos + wave[:, None] * normal[None]
        return np.clip(pos, bounds.lo, bounds.hi)
    if action == "bounce":
        speed, heading = rng.uniform(2.5, 4.0) * unit, rng.uniform(0, 2 * np.pi)
        velocity = speed * np.array([np.cos(heading), np.sin(heading)])
        return _fold(start[None] + steps[:, None] * velocity[None], bounds.lo, bounds.hi)
    if action == "circle":
        radius = rng.uniform(8.0, 18.0) * unit
        middle = (bounds.lo + bounds.hi) / 2
        phase = float(np.arctan2(start[1] - middle, start[0] - middle))
        centre = start - radius * np.array([np.cos(phase), np.sin(phase)])
        omega = rng.choice([-1, 1]) * 2 * np.pi / rng.uniform(20.0, 36.0)
        ang = phase + omega * steps
        pos = centre[None] + radius * np.stack([np.cos(ang), np.sin(ang)], axis=1)
        return np.clip(pos, bounds.lo, bounds.hi)
    return np.repeat(start[None], n, axis=0)  # still, spin, grow, shrink stay in place


def segment_poses(
    rng: np.random.Generator,
    action: str,
    pose: np.ndarray,
    length: int,
    bounds: Bounds,
    unit: float,
) -> np.ndarray:
    """Poses ``(length, 4)`` of one segment; row ``j`` is ``j + 1`` steps after ``pose``.

    ``unit`` is the frame size over 128, so speeds and radii scale with the frame.
    """
    steps = np.arange(1, length + 1, dtype=np.float64)
    out = np.empty((length, 4))
    out[:, :2] = _translate(rng, action, pose[:2], steps, bounds, unit)
    out[:, 2] = pose[2]
    out[:, 3] = pose[3]
    if action == "spin":
        omega = rng.choice([-1, 1]) * np.deg2rad(rng.uniform(6.0, 12.0))
        out[:, 2] = pose[2] + omega * steps
    elif action in ("grow", "shrink"):
        factor = GROW_FACTOR if action == "grow" else 1 / GROW_FACTOR
        end = float(np.clip(pose[3] * factor, bounds.scale_min, bounds.scale_max))
        out[:, 3] = pose[3] * (end / pose[3]) ** (steps / length)
    return out


def track_poses(
    rng: np.random.Generator,
    frames: int,
    choices: tuple[str, ...],
    start: np.ndarray,
    bounds: Bounds,
    unit: float,
) -> tuple[np.ndarray, list[Segment]]:
    """Per-frame poses ``(frames, 4)`` and the motion segments of one object track.

    On top of the segment motions every object drifts slowly in rotation and size, so even a
    ``still`` object's appearance evolves a little over the video.
    """
    poses = np.empty((frames, 4))
    segments: list[Segment] = []
    pose = start.astype(np.float64)
    previous: str | None = None
    for a, b in segment_bounds(rng, frames):
        action = pick_action(rng, choices, previous, float(pose[3]), bounds)
        poses[a:b] = segment_poses(rng, action, pose, b - a, bounds, unit)
        segments.append(Segment(a, b, action))
        pose, previous = poses[b - 1], action
    t = np.arange(frames) / max(frames - 1, 1)
    poses[:, 2] += np.deg2rad(rng.uniform(-0.4, 0.4)) * np.arange(frames)
    drift = 1.0 + rng.uniform(-0.08, 0.08) * t
    poses[:, 3] = np.clip(poses[:, 3] * drift, bounds.scale_min, bounds.scale_max)
    return poses, segments
