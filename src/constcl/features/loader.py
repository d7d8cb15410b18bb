"""Decoding side of ``constcl extract``: each DataLoader worker turns videos into chunks.

A video yields, in order, chunks ``{"job", "kind": "snippets", "first", "frames", "meta"}``
(``frames`` uint8 ``(n, T, size, size, 3)``, at most ``chunk_snippets`` snippets; ``meta``, the
video's index-row fields, only on the first chunk), then one ``{"kind": "boxes", "frames",
"groups"}`` chunk per run of key-frame clips (full frames, short side ``size``; ``groups``
lists the ``(row, box)`` pairs of each clip), or ``{"job", "error"}`` when it turns out to be
bad (also after some chunks: the consumer drops what it has of that video).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
from torch.utils.data import IterableDataset, get_worker_info

from constcl.data.decode import VideoError, decode_clips, probe
from constcl.eval.views import centred_indices, clamped_clip_indices, spatial_crops
from constcl.features.plan import Job, snippet_starts

__all__ = ["ChunkSettings", "VideoChunks", "decode_snippets", "video_meta"]


class ChunkSettings(Protocol):
    """The fields of ``features.extract.ExtractSettings`` that decoding reads (named here, not
    imported: ``extract`` imports this module)."""

    clip_frames: int  # frames per snippet
    frame_stride: int  # spacing of a snippet's frames, in nominal frames
    size: int  # short side of the decoded frames, then the centre size x size crop
    stride: float  # a snippet every stride seconds (or frames)
    stride_unit: str  # "seconds" or "frames"
    decoder: str  # "pyav" or "torchcodec"
    chunk_snippets: int  # snippets a worker decodes at a time


class VideoChunks(IterableDataset):
    """Chunks of the given videos; worker ``w`` of ``W`` takes videos ``w, w + W, ...``.

    Args:
        jobs: the videos. indices: each video's number in the run (echoed as ``job``).
        settings: the extraction settings.
    """

    def __init__(self, jobs: list[Job], indices: list[int], settings: ChunkSettings) -> None:
        self.jobs, self.indices, self.settings = jobs, indices, settings

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        for k in range(worker, len(self.jobs), workers):
            yield from _chunks(self.jobs[k], self.indices[k], self.settings)


def _chunks(job: Job, index: int, settings: ChunkSettings) -> Iterator[dict[str, Any]]:
    try:
        meta, clips, groups, box_clips = video_meta(job, settings)
        step = settings.chunk_snippets
        for lo in range(0, len(clips), step):
            yield {"job": index, "kind": "snippets", "first": lo,
                   "frames": decode_snippets(job, clips[lo:lo + step], settings),
                   "meta": meta if lo == 0 else None}
        for lo in range(0, len(box_clips), step):
            frames = decode_clips(job.item.path, box_clips[lo:lo + step],
                                  short_side=settings.size, backend=settings.decoder)
            yield {"job": index, "kind": "boxes", "frames": np.stack(frames),
                   "groups": groups[lo:lo + step], "meta": None}
    except VideoError as err:
        yield {"job": index, "error": err.reason}


def video_meta(job: Job, settings: ChunkSettings
               ) -> tuple[dict[str, Any], list[np.ndarray], list[list[tuple[int, Any]]],
                          list[np.ndarray]]:
    """Probe a video: (index-row fields, snippet clips, key-frame groups of ``(row, box)``,
    their clips). Raises VideoError."""
    info = probe(job.item.path, settings.decoder)
    starts = snippet_starts(info.num_frames, info.fps, settings.clip_frames,
                            settings.frame_stride, settings.stride, settings.stride_unit)
    clips = [clamped_clip_indices(int(s), settings.clip_frames, settings.frame_stride,
                                  info.num_frames) for s in starts]
    by_time: dict[float, list[tuple[int, Any]]] = {}
    for row, box in enumerate(job.boxes):
        by_time.setdefault(box.timestamp, []).append((row, box.box))
    groups, box_clips, box_rows = [], [], []
    for t, group in by_time.items():
        key = int(np.floor(t * info.fps + 0.5))
        if key >= info.num_frames:
            raise VideoError(job.item.path, f"box time {t}s is past the end "
                                            f"({info.num_frames / info.fps:.2f}s)")
        groups.append(group)
        box_clips.append(centred_indices(key, settings.clip_frames, settings.frame_stride,
                                         info.num_frames))
        box_rows.append({"time": t, "key_frame": key,
                         "lines": [job.boxes[r].line for r, _ in group]})
    meta = {"frames": info.num_frames, "fps": info.fps, "duration": info.duration,
            "width": info.width, "height": info.height, "snippets": len(clips),
            "start_times": [float(s) / info.fps for s in starts],
            "frame_indices": [c.tolist() for c in clips], "box_groups": len(groups),
            "box_rows": box_rows}
    return meta, clips, groups, box_clips


def decode_snippets(job: Job, clips: list[np.ndarray], settings: ChunkSettings) -> np.ndarray:
    """uint8 ``(N, T, size, size, 3)``: the clips decoded with the short side at ``size`` and
    the centre square cropped (the evaluations' one-crop view). Raises VideoError."""
    frames = decode_clips(job.item.path, clips, short_side=settings.size,
                          backend=settings.decoder)
    return np.stack([spatial_crops(f, settings.size, 1)[0] for f in frames])
