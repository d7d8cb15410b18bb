"""``constcl eval classify``: action classification on UCF101 / HMDB51 / Kinetics layouts.

Modes (docs/evaluation.md sections 1 and 5):

* ``linear`` (default): frozen backbone in eval mode (BatchNorm uses running statistics),
  globally average-pooled res5 features, a linear classifier (``probe.py``) trained on the
  cached features of the training views; test scores are the softmax of every view averaged
  per video (``clips`` temporal x ``crops`` spatial views), then top-1 / top-5.
* ``finetune``: the whole network plus a new linear head trained end to end
  (``finetune.py``), tested with the same multi-view averaging.
* ``knn``: VCOP retrieval: each view's feature is L2-normalised, the views of a video are
  averaged, test videos query the training videos by cosine similarity; recall (hit rate) at
  1, 5, 10.

Training views of the linear probe are fixed, cached views (``--train-clips`` temporal x
``--train-crops`` spatial, each view one training sample), not CVRL's random resized crops:
that is what makes the feature cache possible. Outputs in ``--out``: ``results.json``,
``predictions.csv`` (``linear`` / ``finetune``: each test video's label, prediction, top-5 and
class scores), ``confusion.png`` and ``training_curve.png`` (``linear`` / ``finetune``),
``recall_at_k.png`` (``knn``), and the feature cache under ``cache/``.
"""

from __future__ import annotations

import csv
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from constcl.errors import WRITE_ERRNOS, writing
from constcl.eval.classify.data import LAYOUTS, VideoSplits, load_splits
from constcl.eval.classify.finetune import FineTuneConfig, run_finetune
from constcl.eval.classify.scoring import compact_video_index, video_accuracy
from constcl.eval.encoder import (
    check_encoder_choice,
    encoder_identity,
    load_encoder,
    pooled_res5,
    resolve_device,
)
from constcl.eval.feature_cache import EncodedViews, cached_arrays, encode_views
from constcl.eval.finite import check_finite, check_training
from constcl.eval.metrics.classification import aggregate_by_video, retrieval_hit_rate
from constcl.eval.outputs import file_digest, prepare_out_dir, write_json
from constcl.eval.plots import bar_chart, confusion_matrix, plot_confusion, plot_training_curve
from constcl.eval.probe import ProbeConfig, fit_linear_probe, predict
from constcl.eval.settings import ClipProbeSettings, as_paths, check_positive, choice
from constcl.eval.views import ViewSpec
from constcl.faults import kill_on_fault
from constcl.runlock import run_lock

__all__ = ["MODES", "Settings", "frozen_features", "run", "write_predictions"]

log = logging.getLogger(__name__)

MODES = ("linear", "finetune", "knn")


@dataclass(frozen=True, kw_only=True)
class Settings(ClipProbeSettings):
    """``constcl eval classify``: action classification on frozen (or fine-tuned) features.

    data: data-set root or split folder: ``ucfTrainTestlist/``, ``testTrainMulti_7030_splits/``
        or ``kinetics/{train,validate}.csv``.
    layout: split-file layout (``auto``: UCF101, then HMDB51, then Kinetics).
    split: official UCF101 / HMDB51 split (1, 2 or 3).
    videos: folder of the video files (default DATA/videos, DATA/UCF-101, ...).
    mode: ``linear`` probe on frozen features, full ``finetune``, or ``knn`` retrieval.
    size: short side after resizing = side of the square crops.
    clips: temporal test views per video.
    crops: spatial test views per clip (3: both ends and centre).
    train_clips: temporal views per training video for the linear probe (default: ``clips``);
        each view is one training sample. The cache holds videos x views x C floats: for
        Kinetics-400 with R3D-50 use 1-2.
    train_crops: spatial views per training clip for the linear probe.
    epochs: probe / fine-tuning epochs (fine-tuning: try 10-50).
    lr: peak SGD learning rate (probe on standardised features: 0.1 is robust; fine-tuning: try
        0.01 and lower if the loss diverges).
    batch_size: probe batch in views; fine-tuning batch in clips (try 8).
    encode_batch_size: views per forward pass of the frozen encoder.
    """

    data: str | Path
    layout: str = choice("auto", LAYOUTS)
    split: int = choice(1, (1, 2, 3))
    videos: str | Path | None = None
    mode: str = choice("linear", MODES)
    clips: int = 10
    crops: int = choice(3, (1, 3))
    train_clips: int | None = None
    train_crops: int = choice(1, (1, 3))

    def __post_init__(self) -> None:
        super().__post_init__()
        as_paths(self, "data", "videos")
        check_positive(self, "clips")
        check_positive(self, "train_clips", allow_none=True)


# --------------------------------------------------------------------------- scoring


def _data_identity(splits: VideoSplits) -> dict[str, Any]:
    return {"layout": splits.layout, "files": {str(f): file_digest(f) for f in splits.files}}


def frozen_features(settings: Settings, splits: VideoSplits, which: str,
                    spec: ViewSpec) -> tuple[EncodedViews, bool]:
    """Pooled res5 features of every view of the ``train`` or ``test`` videos, from the cache
    when present (the encoder is only built on a miss). Returns (features, cache hit)."""
    items = splits.train if which == "train" else splits.test
    paths = [str(i.path) for i in items]
    key = {"kind": "pooled_res5", "encoder": encoder_identity(settings),
           "data": _data_identity(splits), "split": settings.split, "which": which,
           "videos": paths, "views": vars(spec)}

    def compute() -> dict[str, np.ndarray]:
        device = resolve_device(settings.device)
        net = load_encoder(settings).to(device)
        return encode_views(lambda x: pooled_res5(net, x), paths, spec, device,
                            settings.encode_batch_size, settings.workers, desc=f"encoding {which}")

    arrays, hit = cached_arrays(settings.feature_cache_dir, f"classify-{which}", key, compute)
    check_finite(arrays["values"], task="classify", checkpoint=settings.checkpoint,
                 what=f"pooled res5 features of the {which} views")
    return EncodedViews(arrays), hit


# --------------------------------------------------------------------------- modes


def write_predictions(path: Path, splits: VideoSplits, result: dict[str, Any]) -> None:
    """``predictions.csv``: one row per evaluated test video with its label, predicted class,
    top-5 classes (best first) and the view-averaged class scores, all class indices in
    ``classes`` order, so top-1 / top-5 can be recomputed from the file."""
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["video", "label", "prediction", "top5", "scores"])
        for index, label, row in zip(result["test_videos"], result["labels"], result["scores"],
                                     strict=True):
            order = np.argsort(-row, kind="stable")
            writer.writerow([str(splits.test[int(index)].path), int(label), int(order[0]),
                             " ".join(str(int(c)) for c in order[:5]),
                             " ".join(f"{v:.6g}" for v in row)])


def _labels(splits: VideoSplits, which: str) -> np.ndarray:
    return np.array([i.label for i in (splits.train if which == "train" else splits.test)])


def _run_linear(settings: Settings, splits: VideoSplits, test_spec: ViewSpec,
                train_spec: ViewSpec) -> dict[str, Any]:
    train, hit_train = frozen_features(settings, splits, "train", train_spec)
    kill_on_fault("kill_during_probe", 0)
    test, hit_test = frozen_features(settings, splits, "test", test_spec)
    y_train, y_test = _labels(splits, "train"), _labels(splits, "test")
    x_train = train["values"]
    view_labels = y_train[train["video_index"]]

    def evaluate(probe) -> dict[str, float]:
        acc, _, _ = video_accuracy(predict(probe, test["values"]), test["video_index"], y_test)
        return {"test_top1": acc[1]}

    cfg = ProbeConfig(epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
                      weight_decay=settings.weight_decay, seed=settings.seed)
    probe, history = fit_linear_probe(x_train, view_labels, len(splits.classes), cfg, evaluate)
    check_training(probe, history, task="classify", checkpoint=settings.checkpoint,
                   what="the linear probe", lr=settings.lr)
    logits = predict(probe, test["values"])
    check_finite(logits, task="classify", checkpoint=settings.checkpoint,
                 what="the linear probe's test scores")
    acc, scores, y = video_accuracy(logits, test["video_index"], y_test)
    return {"metrics": _accuracy_metrics(acc), "scores": scores, "labels": y,
            "test_videos": np.unique(test["video_index"]), "history": history,
            "cache_hit": {"train": hit_train, "test": hit_test},
            "videos_evaluated": {"train": int(len(np.unique(train["video_index"]))),
                                 "test": int(len(y))},
            "videos_failed": {"train": train["failed"], "test": test["failed"]},
            "feature_dim": int(x_train.shape[1])}


def _run_knn(settings: Settings, splits: VideoSplits, spec: ViewSpec) -> dict[str, Any]:
    train, hit_train = frozen_features(settings, splits, "train", spec)
    test, hit_test = frozen_features(settings, splits, "test", spec)
    per_video = {}
    for name, enc in (("train", train), ("test", test)):
        v = enc["values"] / np.maximum(np.linalg.norm(enc["values"], axis=1, keepdims=True),
                                       1e-12)
        present, compact = compact_video_index(enc["video_index"])
        per_video[name] = (aggregate_by_video(v, compact, len(present)),
                           _labels(splits, name)[present])
    recall = retrieval_hit_rate(*per_video["test"], *per_video["train"], ks=(1, 5, 10))
    return {"metrics": {f"recall@{k}": v for k, v in recall.items()},
            "cache_hit": {"train": hit_train, "test": hit_test},
            "videos_evaluated": {k: int(len(v[1])) for k, v in per_video.items()},
            "videos_failed": {"train": train["failed"], "test": test["failed"]},
            "feature_dim": int(train["values"].shape[1])}


def _accuracy_metrics(acc: dict[int, float]) -> dict[str, float]:
    return {f"top{k}": v for k, v in acc.items()}


# --------------------------------------------------------------------------- outputs


def _plots(out: Path, mode: str, result: dict[str, Any], classes: list[str]) -> list[str]:
    if mode == "knn":
        names = list(result["metrics"])
        bar_chart(names, [result["metrics"][n] for n in names], out / "recall_at_k.png",
                  "hit rate", "kNN retrieval: test queries vs. train gallery")
        return ["recall_at_k.png"]
    cm = confusion_matrix(result["labels"], result["scores"].argmax(1), len(classes))
    result["confusion_matrix"] = cm
    plot_confusion(cm, classes, out / "confusion.png",
                   f"{mode}: top-1 {result['metrics']['top1']:.3f}")
    plot_training_curve(result["history"], out / "training_curve.png", f"{mode} training")
    return ["confusion.png", "training_curve.png"]


def run(settings: Settings) -> dict[str, Any]:
    """Evaluate; write ``results.json``, ``predictions.csv`` (linear / finetune) and plots to
    ``settings.out``; return the ``results.json`` content (``result["metrics"]``). A second
    process on the same ``out`` is refused (``runlock``)."""
    with run_lock(settings.out, "constcl eval classify"), writing(settings.out, WRITE_ERRNOS):
        return _run(settings)


def _run(settings: Settings) -> dict[str, Any]:
    check_encoder_choice(settings)
    out = prepare_out_dir(settings.out)
    start = time.perf_counter()
    # ---- data
    splits = load_splits(settings.data, settings.layout, settings.split, settings.videos)
    test_spec = ViewSpec(settings.frames, settings.stride, settings.clips, settings.crops,
                         settings.size)
    train_spec = ViewSpec(settings.frames, settings.stride,
                          settings.train_clips or settings.clips, settings.train_crops,
                          settings.size)
    # ---- evaluate
    if settings.mode == "linear":
        result = _run_linear(settings, splits, test_spec, train_spec)
    elif settings.mode == "knn":
        result = _run_knn(settings, splits, test_spec)
    else:
        cfg = FineTuneConfig(epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
                             weight_decay=settings.weight_decay, seed=settings.seed,
                             workers=settings.workers, encode_batch_size=settings.encode_batch_size)
        result = run_finetune(load_encoder(settings), splits, train_spec, test_spec, cfg,
                              resolve_device(settings.device), str(settings.checkpoint))
    # ---- write
    plots = _plots(out, settings.mode, result, splits.classes)
    summary = {
        "task": "classify", "mode": settings.mode, "metrics": result["metrics"],
        "checkpoint": str(settings.checkpoint),
        "backbone": settings.backbone, "branch": settings.branch, "data": str(settings.data),
        "layout": splits.layout, "split": settings.split, "num_classes": len(splits.classes),
        "classes": splits.classes, "views": {"test": vars(test_spec), "train": vars(train_spec)},
        "videos_listed": {"train": len(splits.train), "test": len(splits.test)},
        "videos_missing": splits.missing, "plots": plots,
        "seconds": round(time.perf_counter() - start, 2),
        **{k: v for k, v in result.items() if k not in ("scores", "labels", "test_videos")},
    }
    if "test_videos" in result:
        write_predictions(out / "predictions.csv", splits, result)
        summary["predictions"] = "predictions.csv"
    write_json(out / "results.json", summary)
    return summary
