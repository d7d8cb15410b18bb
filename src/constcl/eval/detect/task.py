"""``constcl eval detect``: AVA v2.2 spatio-temporal action detection on frozen features.

Protocol (docs/evaluation.md section 2, docs/spec.md section 5):

* For every key frame, a clip of ``--frames`` frames at ``--stride`` centred on it (input frame
  ``frames // 2`` is the key frame; see ``detect_data`` for the timestamp -> frame rule), short
  side resized to ``--size``, the full frame (no crop), through the frozen backbone (eval mode).
* RoI features of the boxes on the temporally averaged res5 map (``roi.py``: RoIAlign 7 x 7,
  ``aligned=True``, spatial scale 1/32, spatial max).
* A linear multi-label classifier (sigmoid BCE, ``probe.py``) trained on the features of the
  **ground-truth** training boxes.
* Validation boxes are the ground truth (``--boxes gt``: "mAP (GT)", classification only) or a
  person detector's (``--boxes detections``: "mAP (Det)", boxes with score ``>= --det-thresh``).
  Every box is submitted once per evaluated class with that class's sigmoid score, and
  ``ava_frame_map`` gives the frame-level mAP at IoU 0.5 (PASCAL VOC all-point AP).

Outputs in ``--out``: ``results.json`` (mAP, per-class AP table), ``per_class_ap.png``,
``training_curve.png`` (training loss; validation mAP every ``epochs // 20`` epochs),
``predictions.csv`` (the official detection-CSV layout) and the feature cache under ``cache/``.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from constcl.data.dataset import identity_collate
from constcl.data.decode import VideoError, decode_frames, probe
from constcl.errors import WRITE_ERRNOS, writing
from constcl.eval.detect import data as ava
from constcl.eval.detect.roi import boxes_to_rois, detection_roi_features
from constcl.eval.encoder import (
    check_encoder_choice,
    encoder_identity,
    load_encoder,
    resolve_device,
)
from constcl.eval.feature_cache import cached_arrays
from constcl.eval.finite import check_finite, check_training
from constcl.eval.metrics.ava_map import AVAMapResult, ava_frame_map
from constcl.eval.outputs import file_digest, prepare_out_dir, write_json
from constcl.eval.plots import bar_chart, plot_training_curve
from constcl.eval.probe import ProbeConfig, fit_linear_probe, predict
from constcl.eval.settings import ClipProbeSettings, as_paths, check_positive, choice
from constcl.eval.views import centred_indices, to_model_input
from constcl.models.r3d import R3D
from constcl.runlock import run_lock

__all__ = ["BOX_SOURCES", "KeyFrameClips", "Settings", "detection_rows", "encode_key_frames", "run"]

log = logging.getLogger(__name__)


BOX_SOURCES = ("gt", "detections")


@dataclass(frozen=True, kw_only=True)
class Settings(ClipProbeSettings):
    """``constcl eval detect``: AVA-style frame mAP@0.5 of a linear RoI classifier.

    data: AVA root holding ``annotations/`` (or a folder holding ``ava/annotations/``).
    videos: folder of the videos (default ROOT/videos, ROOT/videos_15min, ROOT/../videos).
    boxes: validation boxes: ``gt`` (mAP GT) or a detector's ``detections`` (mAP Det).
    detections: person-box CSV for ``boxes="detections"`` (default
        ``annotations/ava_val_predicted_boxes.csv``).
    det_thresh: keep detected boxes with score >= this (SlowFast AVA configs: 0.8).
    fps: frames per second for timestamp -> frame (default: the video's).
    time_offset: second of the video's first frame: 0 for the synthetic world, 900 for
        PySlowFast's 15-minute AVA cuts.
    frames: frames of the clip centred on each key frame.
    size: short side of the frames (use a multiple of 32, the res5 stride).
    epochs: the RoI classifier's epochs.
    lr: peak SGD learning rate on standardised RoI features.
    batch_size: the RoI classifier's batch in boxes.
    encode_batch_size: clips per forward pass of the frozen encoder.
    """

    data: str | Path
    videos: str | Path | None = None
    boxes: str = choice("gt", BOX_SOURCES)
    detections: str | Path | None = None
    det_thresh: float = 0.8
    fps: float | None = None
    time_offset: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        as_paths(self, "data", "videos", "detections")
        check_positive(self, "fps", allow_none=True)
        if not 0.0 <= self.det_thresh <= 1.0:
            raise ValueError(f"det_thresh must be in [0, 1]; got {self.det_thresh}")


# --------------------------------------------------------------------------- encoding


class KeyFrameClips(Dataset):
    """Key frame ``i`` -> ``{"clip": uint8 (T, H, W, 3), "index": i, "error": str}``: the
    clip centred on the key frame, short side ``size`` (``clip`` is None on error)."""

    def __init__(self, keys: list[ava.Key], paths: dict[str, Path], frames: int, stride: int,
                 size: int, fps: float | None, time_offset: float) -> None:
        self.keys, self.paths = keys, paths
        self.frames, self.stride, self.size = frames, stride, size
        self.fps, self.time_offset = fps, time_offset

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> dict[str, Any]:
        vid, ts = self.keys[index]
        if vid not in self.paths:
            return {"clip": None, "index": index, "error": f"no video for {vid}"}
        try:
            info = probe(self.paths[vid])
            key = ava.timestamp_to_frame(ts, self.fps or info.fps, self.time_offset)
            if not 0 <= key < info.num_frames:
                return {"clip": None, "index": index,
                        "error": f"{vid} key frame {key} outside 0..{info.num_frames - 1}"}
            idx = centred_indices(key, self.frames, self.stride, info.num_frames)
            clip = decode_frames(self.paths[vid], idx, short_side=self.size)
        except VideoError as err:
            return {"clip": None, "index": index, "error": str(err)}
        return {"clip": clip, "index": index, "error": ""}


@torch.no_grad()
def encode_key_frames(net: R3D, data: KeyFrameClips, boxes: list[np.ndarray],
                      device: torch.device, batch_size: int, workers: int,
                      desc: str) -> dict[str, np.ndarray]:
    """RoI features of every box of every key frame.

    Returns:
        ``{"features": (N, C) float32, "valid": (N,) bool}`` with the boxes of all key frames
        concatenated in order; boxes of key frames that could not be decoded are invalid.
    """
    offsets = np.r_[0, np.cumsum([len(b) for b in boxes])].astype(int)
    feats = np.zeros((offsets[-1], net.out_channels), np.float32)
    valid = np.zeros(offsets[-1], bool)
    buffer: list[dict[str, Any]] = []

    def flush() -> None:
        if not buffer:
            return
        x = to_model_input(np.stack([b["clip"] for b in buffer])).to(device)
        h, w = x.shape[-2:]
        rois = boxes_to_rois([torch.from_numpy(boxes[b["index"]]) for b in buffer], h, w)
        out = detection_roi_features(net.forward_features(x)["res5"], rois.to(device)).cpu().numpy()
        k = 0
        for b in buffer:
            lo, hi = offsets[b["index"]], offsets[b["index"] + 1]
            feats[lo:hi], valid[lo:hi] = out[k:k + hi - lo], True
            k += hi - lo
        buffer.clear()

    loader = DataLoader(data, batch_size=None, num_workers=workers, collate_fn=identity_collate)
    skipped: dict[str, list] = {}  # video -> [key frames skipped, first error]: one warning each
    for item in tqdm(loader, desc=desc, unit="key frame", leave=False):
        if item["error"]:
            skipped.setdefault(data.keys[item["index"]][0], [0, item["error"]])[0] += 1
            continue
        if buffer and (item["clip"].shape != buffer[0]["clip"].shape or len(buffer) >= batch_size):
            flush()
        buffer.append(item)
    flush()
    for vid, (count, error) in skipped.items():
        log.warning("skipping %d key frame(s) of video %s: %s", count, vid, error)
    return {"features": feats, "valid": valid}


def _features(settings: Settings, files: ava.AVAFiles, frames: ava.KeyFrames,
              which: str, sources: list[Path]) -> tuple[dict[str, np.ndarray], bool]:
    """Cached RoI features of ``frames`` (``which`` names the box set in the cache file)."""
    key = {"kind": "roi_res5", "encoder": encoder_identity(settings), "which": which,
           "files": {str(p): file_digest(p) for p in sources}, "det_thresh": settings.det_thresh,
           "clip": [settings.frames, settings.stride, settings.size, settings.fps,
                    settings.time_offset],
           "videos": str(files.videos)}

    def compute() -> dict[str, np.ndarray]:
        device = resolve_device(settings.device)
        net = load_encoder(settings).to(device)
        paths = ava.video_paths(files.videos, {k[0] for k in frames.keys})
        data = KeyFrameClips(frames.keys, paths, settings.frames, settings.stride, settings.size,
                             settings.fps, settings.time_offset)
        return encode_key_frames(net, data, frames.boxes, device, settings.encode_batch_size,
                                 settings.workers, f"encoding {which}")

    arrays, hit = cached_arrays(settings.feature_cache_dir, f"detect-{which}", key, compute)
    check_finite(arrays["features"][arrays["valid"]], task="detect", checkpoint=settings.checkpoint,
                 what=f"RoI features of the {which} boxes")
    return arrays, hit


# --------------------------------------------------------------------------- evaluation


def detection_rows(frames: ava.KeyFrames, scores: np.ndarray, valid: np.ndarray,
                   class_ids: list[int]) -> list[tuple]:
    """Official detection rows: every valid box once per class with that class's score.

    Boxes are rounded to 3 decimals and scores to 6, the precision ``predictions.csv`` is written
    with, so the mAP in ``results.json`` is exactly what an evaluator reading that file computes
    (unrounded, two scores that print alike could rank in either order, and a box could cross
    IoU 0.5 by less than the printed precision).

    Args:
        scores: ``(N, C)`` sigmoid scores of the concatenated boxes; valid: ``(N,)``.
    """
    rows: list[tuple] = []
    i = 0
    for (vid, ts), boxes in zip(frames.keys, frames.boxes, strict=True):
        for box in boxes:
            if valid[i]:
                xyxy = [round(float(v), 3) for v in box]
                rows.extend((vid, ts, *xyxy, c, round(float(scores[i, j]), 6))
                            for j, c in enumerate(class_ids))
            i += 1
    return rows


def _write_predictions(path: Path, rows: list[tuple]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        for vid, ts, x1, y1, x2, y2, c, s in rows:
            w.writerow([vid, f"{ts:04d}", f"{x1:.3f}", f"{y1:.3f}", f"{x2:.3f}", f"{y2:.3f}", c,
                        f"{s:.6f}"])


def _per_class_plot(result: AVAMapResult, label_map: dict[int, str], path: Path,
                    boxes: str) -> list[dict[str, Any]]:
    """Per-class AP table (NaN for classes without ground truth) and its bar chart."""
    table = [{"id": c, "name": name, "ap": result.per_class_ap.get(c, float("nan")),
              "num_gt": result.num_groundtruth[c]} for c, name in label_map.items()]
    bar_chart([f"{t['id']} {t['name']}" for t in table], [t["ap"] for t in table], path,
              "AP @ IoU 0.5", f"AVA frame AP per class ({boxes} boxes)", mean=result.mean_ap)
    return table


def _val_boxes(settings: Settings, files: ava.AVAFiles, gt_val: ava.KeyFrames,
               num_classes: int, fixes: ava.BoxFixes) -> tuple[ava.KeyFrames, list[Path]]:
    if settings.boxes == "gt":
        return gt_val, [files.val]
    if files.val_detections is None:
        raise FileNotFoundError("boxes='detections' needs annotations/ava_val_predicted_boxes.csv "
                                "or detections=PATH")
    return (ava.detection_key_frames(files.val_detections, settings.det_thresh, num_classes, fixes),
            [files.val_detections])


def run(settings: Settings) -> dict[str, Any]:
    """Encode RoI features, train the classifier, write ``results.json``, ``predictions.csv``
    and plots to ``settings.out``; return the ``results.json`` content. A second process on
    the same ``out`` is refused (``runlock``)."""
    with run_lock(settings.out, "constcl eval detect"), writing(settings.out, WRITE_ERRNOS):
        return _run(settings)


def _run(settings: Settings) -> dict[str, Any]:
    check_encoder_choice(settings)
    out = prepare_out_dir(settings.out)
    start = time.perf_counter()
    # ---- annotations
    files = ava.find_ava_files(settings.data, settings.videos, settings.detections)
    label_map = ava.load_label_map(files)
    class_ids = list(label_map)
    fixes = ava.BoxFixes()  # boxes outside the frame or inverted: clipped / dropped, counted
    gt_val_rows = ava.read_groundtruth(files.val, fixes)
    train = ava.groundtruth_key_frames(ava.read_groundtruth(files.train, fixes), class_ids)
    val = ava.groundtruth_key_frames(gt_val_rows, class_ids)
    val_boxes, val_sources = _val_boxes(settings, files, val, len(class_ids), fixes)
    excluded = ava.load_exclusions(files)
    # ---- features (cached)
    f_train, hit_train = _features(settings, files, train, "train-gt", [files.train])
    f_val, hit_val = _features(settings, files, val_boxes, f"val-{settings.boxes}", val_sources)
    # ---- classifier
    y_train = np.concatenate(train.labels)
    keep = f_train["valid"]
    eval_every, epoch = max(1, settings.epochs // 20), [0]

    def evaluate_map(probe) -> dict[str, float]:
        """Validation mAP every ``eval_every`` epochs and at the last (it is not free on AVA)."""
        epoch[0] += 1
        if epoch[0] % eval_every and epoch[0] != settings.epochs:
            return {}
        scores = expit(predict(probe, f_val["features"]))
        dets = detection_rows(val_boxes, scores, f_val["valid"], class_ids)
        return {"val_map": ava_frame_map(gt_val_rows, dets, class_ids, excluded).mean_ap}

    cfg = ProbeConfig(epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
                      weight_decay=settings.weight_decay, seed=settings.seed)
    probe, history = fit_linear_probe(f_train["features"][keep], y_train[keep], len(class_ids),
                                      cfg, evaluate_map)
    # ---- evaluation and outputs
    check_training(probe, history, task="detect", checkpoint=settings.checkpoint,
                   what="the RoI classifier", lr=settings.lr)
    logits = predict(probe, f_val["features"])
    check_finite(logits[f_val["valid"]], task="detect", checkpoint=settings.checkpoint,
                 what="the RoI classifier's validation scores")
    scores = expit(logits)  # the sigmoid, without overflow warnings for large logits
    dets = detection_rows(val_boxes, scores, f_val["valid"], class_ids)
    result = ava_frame_map(gt_val_rows, dets, class_ids, excluded)
    _write_predictions(out / "predictions.csv", dets)
    table = _per_class_plot(result, label_map, out / "per_class_ap.png", settings.boxes)
    plot_training_curve(history, out / "training_curve.png", "RoI classifier training")
    summary = {
        "task": "detect", "metrics": {"map": result.mean_ap}, "boxes": settings.boxes,
        "per_class": table, "checkpoint": str(settings.checkpoint), "backbone": settings.backbone,
        "branch": settings.branch, "data": str(settings.data), "det_thresh": settings.det_thresh,
        "clip": {"frames": settings.frames, "stride": settings.stride, "size": settings.size,
                 "fps": settings.fps, "time_offset": settings.time_offset},
        "key_frames": {"train": len(train.keys), "val": len(val_boxes.keys)},
        "boxes_encoded": {"train": int(keep.sum()), "val": int(f_val["valid"].sum())},
        "boxes_skipped": {"train": int((~keep).sum()), "val": int((~f_val["valid"]).sum())},
        "cache_hit": {"train": hit_train, "val": hit_val},
        "annotation_boxes_fixed": fixes.as_dict(),
        "feature_dim": int(f_train["features"].shape[1]), "history": history,
        "plots": ["per_class_ap.png", "training_curve.png"],
        "seconds": round(time.perf_counter() - start, 2),
    }
    summary["num_classes"] = len(result.per_class_ap)
    write_json(out / "results.json", summary)
    return summary
