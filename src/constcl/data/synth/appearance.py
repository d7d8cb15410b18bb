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


def drifting_colours(rng: np.random.Generator, frames: int) -> np.ndarray:
    """Two saturated object colours per frame, ``(frames, 2, 3)`` float32 in [0, 255].

    The hue of both colours drifts linearly over the video (colour drift of a real instance
    under changing light); the second colour is far from the first in hue or brightness.
    """
    hue = rng.random()
    second = (hue + rng.uniform(0.25, 0.75)) % 1.0
    sat = rng.uniform(0.55, 1.0, size=2)
    val = np.array([rng.uniform(0.75, 1.0), rng.uniform(0.35, 0.7)])
    drift = rng.choice([-1, 1]) * rng.uniform(0.04, 0.12)
    out = np.empty((frames, 2, 3), dtype=np.float32)
    for t in range(frames):
        shift = drift * t / max(frames - 1, 1)
        for k, h in enumerate((hue, second)):
            out[t, k] = colorsys.hsv_to_rgb((h + shift) % 1.0, sat[k], val[k])
    return out * 255.0


def background_canvas(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A muted textured background, ``(height, width, 3)`` float32 in [0, 255].

    Multi-scale noise blended with a faint stripe or check pattern, in two low-saturation
    colours, so it has texture to track yet stays distinct from the saturated objects.
    """
    base = 0.65 * smooth_noise(rng, (height, width), int(rng.integers(3, 6)))
    base += 0.35 * smooth_noise(rng, (height, width), int(rng.integers(10, 20)))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    period = rng.uniform(10.0, 24.0)
    angle = rng.uniform(0, np.pi)
    along = (xx * np.cos(angle) + yy * np.sin(angle)) / period
    if rng.random() < 0.5:
        pattern = (np.sin(along * 2 * np.pi) > 0).astype(np.float32)
    else:
        across = (-xx * np.sin(angle) + yy * np.cos(angle)) / period
        pattern = ((np.floor(along) + np.floor(across)) % 2).astype(np.float32)
    w = np.clip(0.8 * base + 0.2 * pattern, 0.0, 1.0)[..., None]
    hue = rng.random()
    c0 = np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.1, 0.3), 0.25), dtype=np.float32)
    c1 = np.array(
        colorsys.hsv_to_rgb((hue + 0.1) % 1.0, rng.uniform(0.1, 0.3), 0.6), dtype=np.float32
    )
    return (c0 + (c1 - c0) * w) * 255.0
