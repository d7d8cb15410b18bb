"""``constcl eval propagate``: DAVIS-2017 semi-supervised label propagation on frozen features.

Every frame is encoded on its own (``frame_encoder``: a still clip, ``--frame-mode static``) at
full resolution into the ``--stage`` map (default res4, dilated to stride 8 as in VFS; CRW also
works at stride 8). The first frame's masks (one-hot channels background, object 1 .. K; void
counts as background, as in the official loader) are resized to the feature grid (area
average) and propagated with ``propagation.propagate_labels`` (top-k affinities over the
first frame plus a queue of previous frames within a spatial radius; CRW defaults). Each soft
label map is upsampled to the frame size (bilinear) and its argmax is the predicted object id.
J, F and J&F come from ``metrics.davis`` with the official object averaging (first and last
frames excluded).

Features are cached per sequence (``--cache-dir``, default ``OUT/cache``, float16 ``.npz`` keyed
by encoder identity, frame settings and frame files), so reruns with other propagation settings
(``--temperature --topk --context --radius``) do not re-encode.

Writes into ``--out``: ``results.json`` (settings; ``metrics``: the official table
``J&F-Mean, J-Mean, J-Recall, J-Decay, F-Mean, F-Recall, F-Decay``; per-sequence and per-object
means), ``masks/<seq>/%05d.png`` (DAVIS result format, palette PNGs; ``--no-write-masks``
skips them) and ``overlays/<seq>.png`` (predicted over ground-truth masks for a few frames).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from constcl.data.augment import to_model_range
from constcl.data.palette import write_palette_masks
from constcl.errors import WRITE_ERRNOS, writing
from constcl.eval.encoder import (
    check_encoder_choice,
    encoder_identity,
    load_encoder,
    resolve_device,
)
from constcl.eval.feature_cache import cached_arrays
from constcl.eval.finite import check_finite
from constcl.eval.frame_encoder import (
    FrameEncoder,
    cpu_threads,
    stage_stride,
)
from constcl.eval.metrics.davis import VOID_LABEL, evaluate_sequence, summarize
from constcl.eval.outputs import prepare_out_dir, safe_name, write_json
from constcl.eval.propagate.algorithm import PropagationConfig, propagate_labels
from constcl.eval.propagate.data import DavisSequence, load_sequences, read_annotations, read_frames
from constcl.eval.propagate.overlay import evenly_spaced, save_overlay_grid
from constcl.eval.settings import FrameEncoderSettings, as_paths, check_positive
from constcl.runlock import run_lock

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Settings(FrameEncoderSettings):
    """``constcl eval propagate``: semi-supervised label propagation, DAVIS-2017 J&F.

    data: DAVIS root (``JPEGImages/``, ``Annotations/``, ``ImageSets/``), or a synthetic world
        root holding ``davis/``.
    split: the sequence list ``ImageSets/<year>/<split>.txt``.
    year: the ``<year>`` of the sequence list.
    resolution: the frames ``JPEGImages/<resolution>``.
    sequences: evaluate only the first N sequences of the list; quick runs.
    batch_size: frames encoded at once.
    propagation: the propagation hyper-parameters (:class:`PropagationConfig`; on the command
        line each of its fields is a flag).
    overlay_sequences: sequences that get an overlay image.
    overlay_frames: frames per overlay image, evenly spaced.
    write_masks: write the predicted palette PNGs under ``out/masks``.
    """

    data: str | Path
    split: str = "val"
    year: str = "2017"
    resolution: str = "480p"
    sequences: int | None = None
    batch_size: int = 8
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    overlay_sequences: int = 3
    overlay_frames: int = 5
    write_masks: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        as_paths(self, "data")
        check_positive(self, "batch_size", "overlay_frames")
        check_positive(self, "sequences", allow_none=True)
        if self.overlay_sequences < 0:
            raise ValueError(f"overlay_sequences must be >= 0; got {self.overlay_sequences}")


@torch.no_grad()
def encode_frames(encoder: FrameEncoder, frames: np.ndarray, device: torch.device,
                  batch_size: int) -> np.ndarray:
    """``(T, H, W, 3)`` uint8 -> ``(T, C, h, w)`` float16 feature maps."""
    out = []
    for i in range(0, len(frames), batch_size):
        x = torch.from_numpy(frames[i : i + batch_size]).to(device)
        x = to_model_range(x.permute(0, 3, 1, 2).contiguous())
        out.append(encoder(x).half().cpu().numpy())
    return np.concatenate(out)


def first_frame_onehot(first: np.ndarray, grid: tuple[int, int]) -> torch.Tensor:
    """``(H, W)`` ids of frame 0 -> ``(K + 1, h, w)`` soft one-hot on the feature grid.

    Void (255) counts as background; ``K`` is the largest id. Each cell gets the fraction of
    its footprint each label covers (area averaging). CRW resizes bilinearly, which at stride 8
    samples only the pixels next to each cell centre and can miss thin objects.
    """
    ids = torch.from_numpy(np.where(first == VOID_LABEL, 0, first).astype(np.int64))
    onehot = F.one_hot(ids, int(ids.max()) + 1).permute(2, 0, 1).float()
    return F.interpolate(onehot[None], size=grid, mode="area")[0]


def labels_to_ids(soft: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """``(T, L, h, w)`` soft labels -> ``(T, H, W)`` uint8 ids (bilinear upsampling, argmax)."""
    out = np.empty((soft.shape[0], *size), dtype=np.uint8)
    for t in range(soft.shape[0]):
        up = F.interpolate(soft[t : t + 1], size=size, mode="bilinear", align_corners=False)
        out[t] = up[0].argmax(dim=0).cpu().numpy().astype(np.uint8)
    return out


def sequence_features(seq: DavisSequence, settings: Settings, get_encoder,
                      device: torch.device) -> np.ndarray:
    """The cached ``(T, C, h, w)`` features of one sequence (encoded on a cache miss)."""
    spec = {"task": "davis-frames", "encoder": encoder_identity(settings),
            **settings.frame_encoder_spec(),
            "sequence": str(seq.frames[0].parent.resolve()),
            "frames": [(p.name, p.stat().st_size) for p in seq.frames]}

    def compute() -> dict[str, np.ndarray]:
        return {"features": encode_frames(get_encoder(), read_frames(seq.frames), device,
                                          settings.batch_size)}

    arrays, _ = cached_arrays(settings.feature_cache_dir, f"davis-{seq.name}", spec, compute)
    check_finite(arrays["features"], task="propagate", checkpoint=settings.checkpoint,
                 what=f"{settings.stage} feature maps of sequence {seq.name} (cached as float16, "
                      "whose largest value is 65504)")
    return arrays["features"]


def propagate_sequence(seq: DavisSequence, feats: np.ndarray, cfg: PropagationConfig,
                       device: torch.device | str = "cpu"
                       ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Predicted ``(T, H, W)`` ids, ground truth ``(T, H, W)`` and the annotation palette.

    The propagation runs on ``device`` (features ``(T, C, h, w)`` in float32 plus one key set of
    ``1 + context`` frames; an R3D-50 res4 map of a 480p DAVIS sequence is about 2 GB).
    """
    gt, palette = read_annotations(seq.annotations)
    f = torch.from_numpy(feats).to(device).float()
    first = first_frame_onehot(gt[0], tuple(f.shape[-2:])).to(device)
    soft = propagate_labels(f, first, cfg, progress=True)
    pred = labels_to_ids(soft, gt.shape[1:])
    pred[0] = np.where(gt[0] == VOID_LABEL, 0, gt[0])  # the given frame (dropped by the metric)
    return pred, gt, palette


def run(settings: Settings) -> dict[str, Any]:
    """Encode (or load cached) features, propagate, evaluate J&F; write ``results.json``, masks
    and overlays to ``settings.out``; return the ``results.json`` content. A second process on
    the same ``out`` is refused (``runlock``)."""
    with run_lock(settings.out, "constcl eval propagate"), writing(settings.out, WRITE_ERRNOS):
        return _run(settings)


def _run(settings: Settings) -> dict[str, Any]:
    check_encoder_choice(settings)
    start = time.time()
    device = resolve_device(settings.device)
    out = prepare_out_dir(settings.out)
    sequences = load_sequences(settings.data, settings.split, settings.year, settings.resolution,
                               settings.sequences)
    cfg = settings.propagation

    @functools.cache
    def get_encoder() -> FrameEncoder:
        return FrameEncoder(load_encoder(settings), settings.stage, settings.frame_mode,
                            settings.clip_len).to(device)

    with cpu_threads(settings.threads):
        per_seq = _run_sequences(sequences, settings, cfg, get_encoder, device, out)
    summary = summarize(per_seq)
    results = {
        "task": "propagate", "checkpoint": str(settings.checkpoint), "backbone": settings.backbone,
        "branch": settings.branch, "data": str(settings.data), "split": settings.split,
        **settings.frame_encoder_spec(), "stride": stage_stride(settings.stage),
        "propagation": dataclasses.asdict(cfg),
        "num_sequences": len(sequences), "num_objects": len(summary.per_object),
        "metrics": summary.measures,
        "per_sequence": {name: _sequence_means(j, f) for name, (j, f) in per_seq.items()},
        "per_object": {k: {"J-Mean": v[0], "F-Mean": v[1]} for k, v in summary.per_object.items()},
        "seconds": time.time() - start,
    }
    write_json(out / "results.json", results)
    return results


def _run_sequences(sequences: list[DavisSequence], settings: Settings,
                   cfg: PropagationConfig, get_encoder, device: torch.device, out: Path
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Features, propagation, J / F, masks and overlays of every sequence."""
    per_seq = {}
    for i, seq in enumerate(bar := tqdm(sequences, desc="propagate", unit="seq")):
        bar.set_postfix(seq=seq.name)
        feats = sequence_features(seq, settings, get_encoder, device)
        pred, gt, palette = propagate_sequence(seq, feats, cfg, device)
        per_seq[seq.name] = evaluate_sequence(gt, pred)
        if settings.write_masks:
            write_palette_masks(out / "masks" / safe_name(seq.name), pred, palette)
        if i < settings.overlay_sequences:
            save_overlay_grid(out / "overlays" / f"{seq.name}.png", read_frames(seq.frames),
                              pred, gt, evenly_spaced(len(gt), settings.overlay_frames), palette)
    return per_seq


def _sequence_means(j: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """Object-averaged means of one sequence's ``(objects, frames)`` J and F."""
    jm, fm = float(np.nanmean(j.mean(axis=1))), float(np.nanmean(f.mean(axis=1)))
    return {"objects": len(j), "J-Mean": jm, "F-Mean": fm, "J&F-Mean": (jm + fm) / 2}
