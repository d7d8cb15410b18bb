"""Feature caches and the multi-view encoding loop shared by the evaluations.

**Cache.** ``cached_arrays(cache_dir, name, spec, compute)`` stores the arrays ``compute()``
returns in ``<cache_dir>/<name>-<key>.npz`` where ``key`` is a hash of ``spec`` (a JSON-able
dict: encoder identity, data files, clip settings, ...), next to a ``.json`` file holding the
spec for humans. A second call with the same spec loads the file and never calls ``compute``,
so a rerun with other classifier settings does not re-encode. Writes are atomic (temporary
file + rename); a half-written cache is never read.

**Encoding.** ``MultiViewVideos`` turns a list of videos into their evaluation views
(``clips.ViewSpec``); ``encode_views`` runs a function (e.g. pooled res5 features, or the
logits of a fine-tuned network) over all of them in batches, filling rows by dataset index,
and returns one row per view with its video index. Videos that fail to decode are reported,
not silently dropped into a zero score.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from constcl.data.dataset import identity_collate
from constcl.data.decode import VideoError, decode_frames, probe
from constcl.eval.outputs import safe_name, to_jsonable
from constcl.eval.views import (
    ViewSpec,
    clamped_clip_indices,
    spatial_crops,
    temporal_starts,
    to_model_input,
)

__all__ = [
    "EncodedViews",
    "MultiViewVideos",
    "cache_key",
    "cached_arrays",
    "encode_views",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- cache


def cache_key(spec: dict[str, Any]) -> str:
    """First 16 hex digits of the sha256 of ``spec`` as canonical JSON."""
    text = json.dumps(to_jsonable(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached_arrays(
    cache_dir: str | os.PathLike[str],
    name: str,
    spec: dict[str, Any],
    compute: Callable[[], dict[str, np.ndarray]],
) -> tuple[dict[str, np.ndarray], bool]:
    """Load the arrays cached under (name, spec) or compute and store them.

    Returns:
        (arrays, hit) where ``hit`` says whether they came from the cache.
    """
    safe_name(name)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{name}-{cache_key(spec)}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            log.info("feature cache hit: %s", path)
            return {k: data[k] for k in data.files}, True
    arrays = compute()
    tmp = path.with_name(path.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    path.with_suffix(".json").write_text(json.dumps(to_jsonable(spec), indent=2) + "\n")
    log.info("feature cache written: %s", path)
    return arrays, False


# --------------------------------------------------------------------------- views


class MultiViewVideos(Dataset):
    """Video ``i`` -> all of its evaluation views.

    ``__getitem__`` returns ``{"views": uint8 (V, T, S, S, 3), "index": i, "error": str}``
    with ``V = spec.clips * spec.crops`` ordered clip-major (view ``c * crops + k`` is clip
    ``c``, crop ``k``), or ``V = 0`` and the error message when the video cannot be decoded.
    """

    def __init__(self, paths: Sequence[str | os.PathLike[str]], spec: ViewSpec) -> None:
        self.paths = [str(p) for p in paths]
        self.spec = spec

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.spec
        try:
            length = probe(self.paths[index]).num_frames
            starts = temporal_starts(length, s.span, s.clips)
            indices = np.concatenate([clamped_clip_indices(int(t), s.frames, s.stride, length)
                                      for t in starts])
            frames = decode_frames(self.paths[index], indices, short_side=s.size)
        except VideoError as err:
            empty = np.zeros((0, s.frames, s.size, s.size, 3), dtype=np.uint8)
            return {"views": empty, "index": index, "error": str(err)}
        per_clip = frames.reshape(s.clips, s.frames, *frames.shape[1:])
        views = np.concatenate([spatial_crops(c, s.size, s.crops) for c in per_clip])
        return {"views": views, "index": index, "error": ""}


# --------------------------------------------------------------------------- encoding


class EncodedViews(dict):
    """``{"values": (M, D) float32, "video_index": (M,) int64, "failed": (F,) int64}``: one
    row per view, ordered by video index and then view index; ``failed`` lists the videos
    that could not be decoded."""


@torch.no_grad()
def encode_views(
    fn: Callable[[torch.Tensor], torch.Tensor],
    paths: Sequence[str | os.PathLike[str]],
    spec: ViewSpec,
    device: torch.device,
    batch_size: int = 8,
    workers: int = 0,
    desc: str = "encoding",
) -> EncodedViews:
    """Run ``fn`` on every view of every video.

    Args:
        fn: float ``(B, 3, T, S, S)`` in ``[-1, 1]`` on ``device`` -> ``(B, D)``.
        paths: the videos, indexed 0..len-1.
        spec: clip settings.
        batch_size: views per call of ``fn``.
        workers: decoding processes.

    Returns:
        :class:`EncodedViews` (numpy arrays).
    """
    loader = DataLoader(MultiViewVideos(paths, spec), batch_size=None, num_workers=workers,
                        collate_fn=identity_collate)
    rows: dict[int, list[np.ndarray]] = {}
    failed: list[int] = []
    buffer: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        if not buffer:
            return
        clips = to_model_input(np.stack([v for _, v in buffer])).to(device)
        out = fn(clips).float().cpu().numpy()
        for (idx, _), row in zip(buffer, out, strict=True):
            rows.setdefault(idx, []).append(row)
        buffer.clear()

    for item in tqdm(loader, desc=desc, unit="video", leave=False):
        if item["error"]:
            log.warning("skipping undecodable video: %s", item["error"])
            failed.append(item["index"])
            continue
        for view in item["views"]:
            buffer.append((item["index"], view))
            if len(buffer) >= batch_size:
                flush()
    flush()
    order = sorted(rows)
    values = np.concatenate([np.stack(rows[i]) for i in order]) if order else np.zeros((0, 0))
    video_index = np.concatenate([np.full(len(rows[i]), i) for i in order]) if order else []
    return EncodedViews(values=values.astype(np.float32),
                        video_index=np.asarray(video_index, dtype=np.int64),
                        failed=np.asarray(sorted(failed), dtype=np.int64))
