"""Per-step learning-rate schedule, precomputed as an array indexed by the global step (used by
pretraining and by the evaluation probes and fine-tuning)."""

from __future__ import annotations

import math

import numpy as np


def scaled_lr(base_lr: float, global_batch: int) -> float:
    """Linear scaling rule: lr = base_lr * global_batch / 256 (global batch in videos)."""
    return base_lr * global_batch / 256


def warmup_cosine(peak: float, steps: int, warmup_steps: int, final: float = 0.0) -> np.ndarray:
    """LR of every step: linear warm-up from peak / warmup_steps to peak over ``warmup_steps``
    steps, then half a cosine from peak down to ``final`` at the last step."""
    warmup_steps = min(warmup_steps, steps)
    warm = peak * np.arange(1, warmup_steps + 1) / max(warmup_steps, 1)
    rest = steps - warmup_steps
    t = np.arange(rest) / max(rest - 1, 1)
    cosine = final + 0.5 * (peak - final) * (1 + np.cos(math.pi * t))
    return np.concatenate([warm, cosine]).astype(np.float64)
