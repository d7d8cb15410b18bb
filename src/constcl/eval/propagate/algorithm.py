"""Label propagation by top-k feature affinities (the CRW / VFS video-object-segmentation test).

A port of ``ajabri/videowalk`` ``code/test.py`` + ``utils/test_utils.py`` (``context_index_bank``,
``mem_efficient_batched_affinity``, ``MaskedAttention``) on precomputed feature maps:

* Frame 0 keeps its ground-truth soft labels. For target frame ``t >= 1`` the keys are the
  **first frame** (always, no spatial restriction) followed by the **previous ``context``
  frames** ``t - context .. t - 1`` with their *predicted* soft labels; indices below 0 are
  frame 0 (CRW pads the video with ``context`` copies of frame 0, so early queues hold
  duplicates of it, which then count several times in the top-k, as in CRW).
* Affinity ``A = keys . query / temperature`` with L2-normalised features. On the short-term
  keys, positions at Euclidean distance ``>= radius`` feature cells from the query position get
  ``-1e10`` (CRW ``MaskedAttention``: kept when ``distance < radius``).
* Per query cell the ``topk`` largest affinities are softmaxed and their keys' labels summed
  with those weights; the result is frame ``t``'s soft label, fed back into later queues.
* A NaN or inf affinity (from a non-finite feature) is never right: that key gets weight 0,
  and a query cell with no finite affinity gets no label at all (all-zero soft labels, so it
  is predicted background and counts for no object). ``eval propagate`` refuses non-finite
  features before they get here.

Defaults (``PropagationConfig``) follow CRW's DAVIS command line: temperature 0.05, top-k 10,
20 context frames, radius 12 cells (VFS: temperature 0.07, radius 24 at the same stride).
Queries are processed in chunks so memory stays bounded at full DAVIS resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

MASKED = -1e10  # CRW's additive mask value


@dataclass(frozen=True)
class PropagationConfig:
    """Label-propagation hyper-parameters (CRW defaults).

    Attributes:
        temperature: softmax temperature of the affinities (lower: sharper, closer to 1-NN).
        topk: keys kept per query cell before the softmax.
        context: previous frames in the short-term queue (CRW ``videoLen``).
        radius: spatial radius (feature cells) of the short-term keys; ``<= 0`` disables it.
        max_affinity_elems: bound on the floats of one chunk of the affinity matrix.
    """

    temperature: float = 0.05
    topk: int = 10
    context: int = 20
    radius: float = 12.0
    max_affinity_elems: int = 1 << 25


def grid_positions(h: int, w: int) -> torch.Tensor:
    """``(h * w, 2)`` float ``(row, col)`` of each cell, row-major (the flattening order)."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack([rows.flatten(), cols.flatten()], dim=1).float()


def radius_mask(query_pos: torch.Tensor, key_pos: torch.Tensor, radius: float) -> torch.Tensor:
    """``(Nq, 2), (Nk, 2) -> (Nq, Nk)`` bool: True where ``||q - k|| < radius`` (CRW rule)."""
    return torch.cdist(query_pos, key_pos) < radius


def queue_indices(t: int, context: int) -> list[int]:
    """Short-term queue of target frame ``t``: ``t - context .. t - 1``, negatives -> 0."""
    return [max(s, 0) for s in range(t - context, t)]


def propagate_frame(query: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor,
                    num_first: int, positions: torch.Tensor, cfg: PropagationConfig
                    ) -> torch.Tensor:
    """Soft labels of one target frame from its key set.

    Args:
        query: ``(C, N)`` L2-normalised features of the target frame, ``N = h * w`` cells.
        keys: ``(M, C, N)`` features of the key frames; the first ``num_first`` are long-term
            (no radius restriction), the rest short-term.
        labels: ``(M, L, N)`` soft labels of the key frames.
        num_first: number of long-term key frames.
        positions: ``(N, 2)`` cell coordinates (``grid_positions``).
        cfg: temperature, top-k, radius.

    Returns:
        ``(L, N)`` soft labels (convex combinations of key labels).
    """
    m, c, n = keys.shape
    flat_keys = keys.permute(1, 0, 2).reshape(c, m * n)
    flat_labels = labels.permute(1, 0, 2).reshape(labels.shape[1], m * n)
    out = torch.empty(labels.shape[1], n, dtype=labels.dtype, device=labels.device)
    chunk = max(1, cfg.max_affinity_elems // (m * n))
    for start in range(0, n, chunk):
        sl = slice(start, min(start + chunk, n))
        aff = (query[:, sl].T @ flat_keys).view(-1, m, n)  # (q, M, N)
        if cfg.radius > 0 and m > num_first:
            far = ~radius_mask(positions[sl], positions, cfg.radius)  # (q, N)
            aff[:, num_first:] += far[:, None].to(aff.dtype) * MASKED
        aff = aff.reshape(-1, m * n) / cfg.temperature
        aff = aff.masked_fill(~torch.isfinite(aff), -torch.inf)  # never right: weight 0
        weights, idx = torch.topk(aff, min(cfg.topk, m * n), dim=1)
        weights = F.softmax(weights, dim=1).nan_to_num(nan=0.0)  # (a row of -inf: no label)
        out[:, sl] = (flat_labels[:, idx] * weights[None]).sum(dim=-1)
    return out


def propagate_labels(feats: torch.Tensor, first_labels: torch.Tensor,
                     cfg: PropagationConfig | None = None, progress: bool = False
                     ) -> torch.Tensor:
    """Propagate frame 0's soft labels through a video.

    Args:
        feats: ``(T, C, h, w)`` per-frame feature maps (normalised here, per cell).
        first_labels: ``(L, h, w)`` soft labels of frame 0 on the same grid (e.g. one-hot
            channels background, object 1, ..., object K).
        cfg: hyper-parameters (``PropagationConfig()`` when None).
        progress: show a per-frame progress bar.

    Returns:
        ``(T, L, h, w)`` soft labels; frame 0 is ``first_labels``.
    """
    cfg = cfg or PropagationConfig()
    t_len, _, h, w = feats.shape
    if first_labels.shape[-2:] != (h, w):
        raise ValueError(f"labels {tuple(first_labels.shape)} do not match features {(h, w)}")
    feats = F.normalize(feats.float(), dim=1).flatten(2)  # (T, C, N)
    labels = torch.zeros(t_len, first_labels.shape[0], h * w, device=feats.device)
    labels[0] = first_labels.to(feats.device).float().flatten(1)
    positions = grid_positions(h, w).to(feats.device)
    for t in tqdm(range(1, t_len), desc="propagate", unit="frame", leave=False,
                  disable=not progress):
        idx = [0, *queue_indices(t, cfg.context)]
        labels[t] = propagate_frame(feats[t], feats[idx], labels[idx], 1, positions, cfg)
    return labels.view(t_len, -1, h, w)
