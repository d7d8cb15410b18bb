"""Appearance of the synthetic world: shape masks, procedural textures, colours, backgrounds.

Shapes are defined in an object's own unit coordinates ``(u, v)`` (``v`` points down, like
image rows), with the shape inside the unit disc scaled by ``EXTENT``: a renderer maps each
pixel to ``(u, v)`` with the object's centre, rotation and radius, and asks :func:`shape_mask`
which pixels are inside. Textures live in the same coordinates, so they rotate and scale with
the object, like the surface of a real object.
"""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

TEXTURE_SIZE = 64  # texels per side of an object texture covering u, v in [-1, 1]
EXTENT = 1.2  # every shape lies within |u|, |v| <= EXTENT (the square's corners reach 1.2)
TEXTURES: tuple[str, ...] = ("stripes", "checks", "noise", "dots")
OBJECT_TEXTURE = "noise"  # world v2: one texture kind for every object (no texture identity)
HUE_CYCLE = (0.6, 1.0)  # turns of hue an object's colours cycle through over a video


def shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask of the pixels whose unit coordinates ``(u, v)`` fall inside ``shape``."""
    if shape == "circle":
        return u * u + v * v <= 1.0
    if shape == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if shape == "triangle":  # equilateral, circumradius 1, apex up
        c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
        d = np.maximum(np.maximum(v, -c * u - s * v), c * u - s * v)
        return d <= 0.5
    if shape == "star":  # five points, inner radius 0.45
        r = np.sqrt(u * u + v * v)
        theta = np.arctan2(u, -v)  # 0 at the top, so one point faces up
        lobe = np.abs(((theta * 5 / (2 * np.pi)) % 1.0) - 0.5) * 2  # 1 at a point, 0 between
        return r <= 0.45 + 0.6 * lobe**2
    if shape == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.3)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.32) & (av <= 0.95)) | ((av <= 0.32) & (au <= 0.95))
    raise ValueError(f"unknown shape {shape!r}")


def smooth_noise(rng: np.random.Generator, size: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1]: a ``cells`` x ``cells`` random grid upsampled bicubically."""
    grid = rng.random((cells, cells), dtype=np.float32)
    up = Image.fromarray(grid, mode="F").resize((size[1], size[0]), Image.Resampling.BICUBIC)
    out = np.asarray(up, dtype=np.float32)
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def object_texture(rng: np.random.Generator, kind: str) -> np.ndarray:
    """A ``TEXTURE_SIZE``-square map of blend weights in [0, 1] between two object colours."""
    n = TEXTURE_SIZE
    axis = np.linspace(-1.0, 1.0, n, dtype=np.float32)
    v, u = np.meshgrid(axis, axis, indexing="ij")
    angle = rng.uniform(0, np.pi)
    along = u * np.cos(angle) + v * np.sin(angle)
    freq = rng.uniform(2.0, 4.0)
    if kind == "stripes":
        w = (np.sin(along * freq * np.pi) > 0).astype(np.float32)
    elif kind == "checks":
        across = -u * np.sin(angle) + v * np.cos(angle)
        w = ((np.floor(along * freq) + np.floor(across * freq)) % 2).astype(np.float32)
    elif kind == "noise":
        w = smooth_noise(rng, (n, n), int(rng.integers(4, 8)))
    elif kind == "dots":
        cu = (u * freq) % 1.0 - 0.5
        cv = (v * freq) % 1.0 - 0.5
        w = (cu * cu + cv * cv < 0.09).astype(np.float32)
    else:
        raise ValueError(f"unknown texture {kind!r}")
    return w


def cycling_colours(rng: np.random.Generator, frames: int,
                    cycle: tuple[float, float] = HUE_CYCLE) -> np.ndarray:
    """Two saturated object colours per frame, ``(frames, 2, 3)`` float32 in [0, 255].

    World v2 (no colour identity): saturation and brightness come from one narrow range shared
    by every object of every video, the second colour is the first's complement, and the hue
    cycles by ``cycle`` turns (``HUE_CYCLE`` for the world's videos) over the video from a
    random phase. Two clips of one video a typical gap apart differ in hue about as much as the
    training colour jitter, so an object's colour does not tell its video from the others
    (``bench/world_audit.py`` measures this).
    """
    hue = rng.random()
    turns = rng.choice([-1, 1]) * rng.uniform(*cycle)
    sat = rng.uniform(0.6, 0.8)
    val = (rng.uniform(0.85, 0.95), rng.uniform(0.75, 0.85))
    out = np.empty((frames, 2, 3), dtype=np.float32)
    for t in range(frames):
        h = hue + turns * t / max(frames - 1, 1)
        for k in range(2):
            out[t, k] = colorsys.hsv_to_rgb((h + 0.5 * k) % 1.0, sat, val[k])
    return out * 255.0


def background_canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted textured background, ``(height, width, 3)`` float32 in [0, 255].

    World v2: every video's background has the same statistics (two octaves of value noise with
    fixed cell counts, a grey-blue tone of fixed low saturation, fixed contrast); only the
    particular noise pattern differs. So it has texture to track, yet no colour, pattern period
    or orientation that would identify the video.
    """
    base = 0.65 * smooth_noise(rng, (height, width), max(2, round(4 * width / 136)))
    base += 0.35 * smooth_noise(rng, (height, width), max(4, round(14 * width / 136)))
    w = np.clip(base, 0.0, 1.0)[..., None]
    c0 = np.array(colorsys.hsv_to_rgb(0.6, 0.12, 0.15), dtype=np.float32)
    c1 = np.array(colorsys.hsv_to_rgb(0.6, 0.12, 0.4), dtype=np.float32)
    return (c0 + (c1 - c0) * w) * 255.0
