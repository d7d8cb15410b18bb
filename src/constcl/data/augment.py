"""View augmentations of docs/spec.md section 1, each identical for every frame of a clip.

Two parts, so that batches leaving the workers stay small and the heavy pixel work runs on the
training device:

* geometric (in the data-loader worker, numpy RNG): random resized crop + horizontal flip,
  returning a uint8 clip (3, T, S, S) and the ``CropParams`` used, which also map boxes;
* photometric (``PhotometricAugment``, an ``nn.Module`` on whatever device the batch is on):
  colour jitter, grayscale, Gaussian blur, solarise, then values mapped to [-1, 1].

``to_model_range`` is the one mapping of pixel values to the model's input range [-1, 1] (used
by training and evaluation alike); ``from_model_range`` undoes it for display.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "to_model_range",
    "from_model_range",
    "CropParams",
    "sample_crop",
    "apply_crop",
    "random_crop_flip",
    "transform_boxes",
    "PhotometricAugment",
]

# ITU-R 601 luma weights, as torchvision's rgb_to_grayscale.
_LUMA = (0.2989, 0.587, 0.114)


# --------------------------------------------------------------------- model input range


def to_model_range(x: torch.Tensor, max_value: float = 255.0) -> torch.Tensor:
    """Pixel values in ``[0, max_value]`` -> float32 in ``[-1, 1]``, any shape, layout kept.

    Computes ``x.float() / (max_value / 2) - 1``: with the default 255 that is exactly
    ``x.float() / 127.5 - 1`` (uint8 frames, or floats still in [0, 255]); with
    ``max_value=1`` it is exactly ``x.float() * 2 - 1`` (floats in [0, 1]). Nothing is clamped
    and no channel axis is moved.
    """
    return x.float() / (max_value / 2) - 1.0


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_range` for display: ``[-1, 1]`` -> float ``[0, 1]``, clamped."""
    return (x.clamp(-1, 1) + 1) / 2


# ---------------------------------------------------------------- geometric part (worker side)


@dataclass(frozen=True)
class CropParams:
    """A crop of a (height, width) frame: pixel rectangle [top, top+h) x [left, left+w), then
    an optional horizontal flip of the cropped clip."""

    top: int
    left: int
    height: int
    width: int
    flip: bool
    frame_height: int
    frame_width: int


def sample_crop(
    frame_height: int,
    frame_width: int,
    rng: np.random.Generator,
    scale: tuple[float, float] = (0.3, 1.0),
    ratio: tuple[float, float] = (0.5, 2.0),
    flip_p: float = 0.5,
) -> CropParams:
    """Random resized crop parameters, as torchvision's ``RandomResizedCrop.get_params``.

    Ten tries of (area fraction ~ U(scale), log aspect ~ U(log ratio)); if none fits, the
    largest centred crop whose aspect is clamped into ``ratio``.
    """
    area = frame_height * frame_width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    flip = bool(rng.random() < flip_p)
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= frame_width and 0 < h <= frame_height:
            top = int(rng.integers(0, frame_height - h + 1))
            left = int(rng.integers(0, frame_width - w + 1))
            return CropParams(top, left, h, w, flip, frame_height, frame_width)
    in_ratio = frame_width / frame_height
    if in_ratio < ratio[0]:
        w, h = frame_width, round(frame_width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = frame_height, round(frame_height * ratio[1])
    else:
        w, h = frame_width, frame_height
    top, left = (frame_height - h) // 2, (frame_width - w) // 2
    return CropParams(top, left, h, w, flip, frame_height, frame_width)


def apply_crop(frames: np.ndarray, params: CropParams, size: int) -> torch.Tensor:
    """Crop, resize (bilinear, antialiased) and flip a clip.

    Args:
        frames: uint8 (T, H, W, 3).
    Returns:
        uint8 tensor (3, T, size, size), a permuted view of a (T, 3, size, size) result (one
        copy fewer per clip; ``torch.stack`` in the collate function makes the batch
        contiguous).
    """
    p = params
    clip = torch.from_numpy(np.ascontiguousarray(frames))
    clip = clip[:, p.top : p.top + p.height, p.left : p.left + p.width]  # (T, h, w, 3)
    clip = clip.permute(0, 3, 1, 2)  # (T, 3, h, w), channels-last memory: torch's fast uint8 path
    clip = F.interpolate(clip, size=(size, size), mode="bilinear", antialias=True)
    if p.flip:
        clip = clip.flip(-1)
    return clip.permute(1, 0, 2, 3)


def random_crop_flip(
    frames: np.ndarray, size: int, rng: np.random.Generator
) -> tuple[torch.Tensor, CropParams]:
    """One crop and flip for every frame of a clip: (T, H, W, 3) -> uint8 (3, T, size, size)."""
    params = sample_crop(frames.shape[1], frames.shape[2], rng)
    return apply_crop(frames, params, size), params


def transform_boxes(
    boxes: np.ndarray, params: CropParams, min_visible: float = 0.25, min_side: float = 0.02
) -> tuple[np.ndarray, np.ndarray]:
    """Map boxes from the source frame into the augmented clip.

    A box stays valid when at least ``min_visible`` of its area lies inside the crop (a crop
    keeps >= 30 % of the frame, so a whole-frame box is always valid) and its visible part is at
    least ``min_side`` of the clip wide and high.

    Args:
        boxes: (K, 4) x1, y1, x2, y2 normalised to the *source* frame.
        params: the view's crop and flip.

    Returns:
        (K, 4) float32 boxes normalised to the augmented clip and clipped to [0, 1], and a
        (K,) bool validity mask.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    p = params
    x = (boxes[:, [0, 2]] * p.frame_width - p.left) / p.width
    y = (boxes[:, [1, 3]] * p.frame_height - p.top) / p.height
    if p.flip:
        x = 1.0 - x[:, ::-1]
    mapped = np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1)
    clipped = mapped.clip(0.0, 1.0)
    width, height = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (mapped[:, 2] - mapped[:, 0]) * (mapped[:, 3] - mapped[:, 1])
    valid = (width >= min_side) & (height >= min_side) & (area > 0)
    valid &= width * height >= min_visible * np.maximum(area, 1e-12)
    return clipped.astype(np.float32), valid


# ----------------------------------------------------------- photometric part (device side)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, ...) -> (B, 1, ...) luma."""
    return _LUMA[0] * x[:, 0:1] + _LUMA[1] * x[:, 1:2] + _LUMA[2] * x[:, 2:3]


def _per_clip(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1, 1) broadcastable against a (B, 3, T, H, W) clip."""
    return v.to(like.device, like.dtype).view(-1, *([1] * (like.dim() - 1)))


def adjust_brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """x (B, 3, T, H, W) in [0, 1], factor (B,)."""
    return (x * _per_clip(factor, x)).clamp(0, 1)


def adjust_contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the clip's mean luma (one mean per clip, so every frame gets the same map)."""
    mean = _gray(x).mean(dim=(1, 2, 3, 4), keepdim=True)
    f = _per_clip(factor, x)
    return (f * x + (1 - f) * mean).clamp(0, 1)


def adjust_saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend with the per-pixel luma."""
    f = _per_clip(factor, x)
    return (f * x + (1 - f) * _gray(x)).clamp(0, 1)


def adjust_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by ``shift`` (B,) turns, in [-0.5, 0.5], through HSV (as torchvision)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(dim=1)
    minc, _ = x.min(dim=1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    sat = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    rc, gc, bc = (maxc - r) / safe, (maxc - g) / safe, (maxc - b) / safe
    hue = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    hue = torch.where(delta > 0, hue / 6.0, torch.zeros_like(hue))
    h6 = torch.remainder(hue + _per_clip(shift, hue), 1.0) * 6.0

    def channel(n: float) -> torch.Tensor:  # HSV -> RGB without a sector table
        k = torch.remainder(n + h6, 6.0)
        return maxc - maxc * sat * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)

    return torch.stack([channel(5.0), channel(3.0), channel(1.0)], dim=1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma (pixels) per clip; reflect padding.

    x (B, C, T, H, W), sigma (B,); sigma <= 0 leaves the clip unchanged.
    """
    b, c, t, h, w = x.shape
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    s = sigma.to(x.device, x.dtype).clamp_min(1e-6).view(-1, 1)
    kernel = torch.exp(-0.5 * (offsets / s) ** 2)
    identity = (offsets == 0).to(x.dtype).expand_as(kernel)
    kernel = torch.where(sigma.to(x.device).view(-1, 1) > 0, kernel, identity)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)  # (B, k)
    kernel = kernel.repeat_interleave(c * t, dim=0)  # (B*C*T, k)
    planes = x.reshape(1, b * c * t, h, w)
    planes = F.pad(planes, (radius, radius, 0, 0), mode="reflect")
    planes = F.conv2d(planes, kernel.view(-1, 1, 1, kernel_size), groups=b * c * t)
    planes = F.pad(planes, (0, 0, radius, radius), mode="reflect")
    planes = F.conv2d(planes, kernel.view(-1, 1, kernel_size, 1), groups=b * c * t)
    return planes.view(b, c, t, h, w)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)
_VIEW_DEFAULTS = {"a": {"blur_p": 1.0, "solarize_p": 0.0}, "b": {"blur_p": 0.1, "solarize_p": 0.2}}


class PhotometricAugment(nn.Module):
    """Batched colour augmentations of docs/spec.md section 1; each parameter drawn once per clip.

    Input (B, 3, T, H, W) uint8 in [0, 255] or float in [0, 1]; output float in [-1, 1], same
    device. Random numbers come from ``generator`` (a CPU ``torch.Generator``; per call, or the
    one given to the constructor, or torch's global RNG) and are moved to the batch's device, so a
    seeded run gives the same augmentations on CPU and GPU.
    """

    def __init__(
        self,
        jitter_p: float = 0.8,
        brightness: float = 0.8,
        contrast: float = 0.8,
        saturation: float = 0.8,
        hue: float = 0.2,
        grayscale_p: float = 0.2,
        blur_p: float = 1.0,
        blur_sigma: tuple[float, float] = (0.1, 2.0),
        solarize_p: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.jitter_p, self.grayscale_p = jitter_p, grayscale_p
        self.strength = (brightness, contrast, saturation, hue)
        self.blur_p, self.blur_sigma, self.solarize_p = blur_p, blur_sigma, solarize_p
        self.kernel_size = 2 * math.ceil(3 * blur_sigma[1]) + 1  # covers +-3 sigma
        self.generator = generator

    @classmethod
    def for_view(cls, view: str, generator: torch.Generator | None = None,
                 color_strength: float = 1.0, crop_size: int = 224) -> PhotometricAugment:
        """Defaults of docs/spec.md section 1: view "a" always blurs, never solarises; view "b"
        blurs with p 0.1 and solarises with p 0.2.

        ``color_strength`` scales the jitter strengths (1.0: brightness, contrast, saturation
        0.8 and hue 0.2). The blur sigma range 0.1-2.0 px is the paper's for 224 px crops and is
        scaled by ``crop_size / 224``, so a smaller crop gets the same relative blur.
        """
        if view not in _VIEW_DEFAULTS:
            raise ValueError(f"view must be 'a' or 'b', got {view!r}")
        if color_strength < 0:
            raise ValueError(f"color_strength must be >= 0, got {color_strength}")
        c, k = color_strength, crop_size / 224
        return cls(**_VIEW_DEFAULTS[view], brightness=0.8 * c, contrast=0.8 * c,
                   saturation=0.8 * c, hue=min(0.2 * c, 0.5), blur_sigma=(0.1 * k, 2.0 * k),
                   generator=generator)

    def sample_params(self, batch: int, generator: torch.Generator | None = None) -> dict:
        """Per-clip parameters, all on CPU: factors (B, 4) in jitter op order (brightness,
        contrast, saturation: multiplicative; hue: additive), order (B, 4) op permutation,
        and bool masks / sigmas (B,)."""
        g = generator or self.generator

        def u(lo: float, hi: float, n: int = batch) -> torch.Tensor:
            return lo + (hi - lo) * torch.rand(n, generator=g)

        b, c, s, h = self.strength
        factors = torch.stack(
            [u(max(0, 1 - b), 1 + b), u(max(0, 1 - c), 1 + c), u(max(0, 1 - s), 1 + s), u(-h, h)],
            dim=1,
        )
        order = torch.argsort(torch.rand(batch, 4, generator=g), dim=1)
        blur = torch.rand(batch, generator=g) < self.blur_p
        sigma = torch.where(blur, u(*self.blur_sigma), torch.zeros(batch))
        return {
            "jitter": torch.rand(batch, generator=g) < self.jitter_p,
            "factors": factors,
            "order": order,
            "grayscale": torch.rand(batch, generator=g) < self.grayscale_p,
            "sigma": sigma,
            "solarize": torch.rand(batch, generator=g) < self.solarize_p,
        }

    def apply(self, x: torch.Tensor, params: dict) -> torch.Tensor:
        """Apply given per-clip ``params`` to x (B, 3, T, H, W) in [0, 1]; returns [0, 1]."""
        dev = x.device
        jitter, order = params["jitter"].to(dev), params["order"].to(dev)
        factors = params["factors"].to(dev)
        for step in range(4):  # each clip runs its own permutation of the four jitter ops
            for op_id, op in enumerate(_JITTER_OPS):
                sel = (jitter & (order[:, step] == op_id)).nonzero().flatten()
                if sel.numel():
                    x = x.index_copy(0, sel, op(x.index_select(0, sel), factors[sel, op_id]))
        gray = _per_clip(params["grayscale"], x).bool()
        x = torch.where(gray, _gray(x).expand_as(x), x)
        if bool((params["sigma"] > 0).any()):
            x = gaussian_blur(x, params["sigma"], self.kernel_size)
        sol = _per_clip(params["solarize"], x).bool()
        return torch.where(sol & (x >= 0.5), 1.0 - x, x)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, T, H, W) uint8 or [0, 1] float -> float (B, 3, T, H, W) in [-1, 1]."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected (B, 3, T, H, W), got {tuple(x.shape)}")
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        x = self.apply(x, self.sample_params(x.shape[0], generator))
        return to_model_range(x, max_value=1.0)
