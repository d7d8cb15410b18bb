"""``constcl eval classify``: action classification on UCF101 / HMDB51 / Kinetics layouts.

Modes (EVALUATION.md sections 1 and 5):

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

import argparse
import csv
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from constcl.eval.classify_data import LAYOUTS, VideoSplits, load_splits
from constcl.eval.clips import ViewSpec
from constcl.eval.common import (
    add_encoder_arguments,
    encoder_identity,
    file_digest,
    load_encoder,
    prepare_out_dir,
    resolve_device,
    write_json,
)
from constcl.eval.features import EncodedViews, cached_arrays, encode_views, pooled_res5
from constcl.eval.metrics.classification import (
    aggregate_by_video,
    retrieval_hit_rate,
    topk_accuracy,
)
from constcl.eval.plots import bar_chart, confusion_matrix, plot_confusion, plot_training_curve
from constcl.eval.probe import ProbeConfig, fit_linear_probe, predict

__all__ = ["add_arguments", "run", "average_view_scores", "video_accuracy", "frozen_features"]

log = logging.getLogger(__name__)

MODES = ("linear", "finetune", "knn")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_encoder_arguments(parser)
    parser.add_argument("--data", required=True, type=Path,
                        help="data-set root or split folder: ucfTrainTestlist/, "
                             "testTrainMulti_7030_splits/ or kinetics/{train,validate}.csv")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="split-file layout (auto: UCF101, then HMDB51, then Kinetics)")
    parser.add_argument("--split", type=int, default=1, choices=(1, 2, 3),
                        help="official UCF101 / HMDB51 split")
    parser.add_argument("--videos", type=Path, default=None,
                        help="folder of the video files (default DATA/videos, DATA/UCF-101, ..)")
    parser.add_argument("--mode", choices=MODES, default="linear",
                        help="linear probe on frozen features, full fine-tuning, or kNN retrieval")
    views = parser.add_argument_group("views")
    views.add_argument("--frames", type=int, default=32, help="frames per clip")
    views.add_argument("--stride", type=int, default=2, help="temporal stride between frames")
    views.add_argument("--size", type=int, default=256,
                       help="short side after resizing = side of the square crops")
    views.add_argument("--clips", type=int, default=10, help="temporal test views per video")
    views.add_argument("--crops", type=int, default=3, choices=(1, 3),
                       help="spatial test views per clip (3: both ends and centre)")
    views.add_argument("--train-clips", type=int, default=None,
                       help="temporal views per training video for the linear probe "
                            "(default: --clips); each view is one training sample. The cache "
                            "holds videos x views x C floats: for Kinetics-400 with R3D-50 use "
                            "1-2")
    views.add_argument("--train-crops", type=int, default=1, choices=(1, 3),
                       help="spatial views per training clip for the linear probe")
    train = parser.add_argument_group("classifier")
    train.add_argument("--epochs", type=int, default=100,
                       help="probe / fine-tuning epochs (fine-tuning: try 10-50)")
    train.add_argument("--lr", type=float, default=0.1,
                       help="peak SGD learning rate (probe on standardised features: 0.1 is "
                            "robust; fine-tuning: try 0.01 and lower if the loss diverges)")
    train.add_argument("--batch-size", type=int, default=256,
                       help="probe batch in views; fine-tuning batch in clips (try 8)")
    train.add_argument("--weight-decay", type=float, default=0.0,
                       help="L2 weight decay (CVRL's linear eval uses 0)")
    parser.add_argument("--encode-batch-size", type=int, default=8,
                        help="views per forward pass of the frozen encoder")


# --------------------------------------------------------------------------- scoring


def average_view_scores(view_logits: np.ndarray, video_index: np.ndarray,
                        num_videos: int | None = None) -> np.ndarray:
    """Per-video scores: the softmax of every view ``(M, C)``, averaged over the views of each
    video (``video_index (M,)``) -> ``(V, C)``."""
    z = np.asarray(view_logits, dtype=np.float64)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return aggregate_by_video(z / z.sum(axis=1, keepdims=True), video_index, num_videos)


def _compact(video_index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(video ids present, video_index renumbered to 0..len(present)-1)."""
    present, compact = np.unique(video_index, return_inverse=True)
    return present, compact


def video_accuracy(view_logits: np.ndarray, video_index: np.ndarray,
                   labels: np.ndarray) -> tuple[dict[int, float], np.ndarray, np.ndarray]:
    """Top-1 / top-5 of multi-view averaged scores.

    Args:
        view_logits: ``(M, C)``; video_index: ``(M,)`` indices into ``labels`` (videos that
            failed to decode simply have no rows); labels: ``(N,)`` class of every video.

    Returns:
        (``{1: top1, 5: top5}`` (k clamped to C), per-video scores ``(V, C)``, their labels).
    """
    present, compact = _compact(video_index)
    scores = average_view_scores(view_logits, compact, len(present))
    y = np.asarray(labels)[present]
    ks = sorted({1, min(5, scores.shape[1])})
    return topk_accuracy(scores, y, ks), scores, y


# --------------------------------------------------------------------------- features


def _data_identity(splits: VideoSplits) -> dict[str, Any]:
    return {"layout": splits.layout, "files": {str(f): file_digest(f) for f in splits.files}}


def frozen_features(args: argparse.Namespace, splits: VideoSplits, which: str,
                    spec: ViewSpec) -> tuple[EncodedViews, bool]:
    """Pooled res5 features of every view of the ``train`` or ``test`` videos, from the cache
    when present (the encoder is only built on a miss). Returns (features, cache hit)."""
    items = splits.train if which == "train" else splits.test
    paths = [str(i.path) for i in items]
    key = {"kind": "pooled_res5", "encoder": encoder_identity(args),
           "data": _data_identity(splits), "split": args.split, "which": which,
           "videos": paths, "views": vars(spec)}

    def compute() -> dict[str, np.ndarray]:
        device = resolve_device(args.device)
        net = load_encoder(args).to(device)
        return encode_views(lambda x: pooled_res5(net, x), paths, spec, device,
                            args.encode_batch_size, args.workers, desc=f"encoding {which}")

    cache_dir = args.cache_dir or args.out / "cache"
    arrays, hit = cached_arrays(cache_dir, f"classify-{which}", key, compute)
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


def _run_linear(args: argparse.Namespace, splits: VideoSplits, test_spec: ViewSpec,
                train_spec: ViewSpec) -> dict[str, Any]:
    train, hit_train = frozen_features(args, splits, "train", train_spec)
    test, hit_test = frozen_features(args, splits, "test", test_spec)
    y_train, y_test = _labels(splits, "train"), _labels(splits, "test")
    x_train = train["values"]
    view_labels = y_train[train["video_index"]]

    def evaluate(probe) -> dict[str, float]:
        acc, _, _ = video_accuracy(predict(probe, test["values"]), test["video_index"], y_test)
        return {"test_top1": acc[1]}

    cfg = ProbeConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      weight_decay=args.weight_decay, seed=args.seed)
    probe, history = fit_linear_probe(x_train, view_labels, len(splits.classes), cfg, evaluate)
    acc, scores, y = video_accuracy(predict(probe, test["values"]), test["video_index"], y_test)
    return {"metrics": _accuracy_metrics(acc), "scores": scores, "labels": y,
            "test_videos": np.unique(test["video_index"]), "history": history,
            "cache_hit": {"train": hit_train, "test": hit_test},
            "videos_evaluated": {"train": int(len(np.unique(train["video_index"]))),
                                 "test": int(len(y))},
            "videos_failed": {"train": train["failed"], "test": test["failed"]},
            "feature_dim": int(x_train.shape[1])}


def _run_knn(args: argparse.Namespace, splits: VideoSplits, spec: ViewSpec) -> dict[str, Any]:
    train, hit_train = frozen_features(args, splits, "train", spec)
    test, hit_test = frozen_features(args, splits, "test", spec)
    per_video = {}
    for name, enc in (("train", train), ("test", test)):
        v = enc["values"] / np.maximum(np.linalg.norm(enc["values"], axis=1, keepdims=True),
                                       1e-12)
        present, compact = _compact(enc["video_index"])
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


def run(args: argparse.Namespace) -> int:
    out = prepare_out_dir(args.out)
    start = time.perf_counter()
    # ---- data
    splits = load_splits(args.data, args.layout, args.split, args.videos)
    test_spec = ViewSpec(args.frames, args.stride, args.clips, args.crops, args.size)
    train_spec = ViewSpec(args.frames, args.stride, args.train_clips or args.clips,
                          args.train_crops, args.size)
    # ---- evaluate
    if args.mode == "linear":
        result = _run_linear(args, splits, test_spec, train_spec)
    elif args.mode == "knn":
        result = _run_knn(args, splits, test_spec)
    else:
        from constcl.eval.finetune import run_finetune

        result = run_finetune(args, splits, train_spec, test_spec)
    # ---- write
    plots = _plots(out, args.mode, result, splits.classes)
    summary = {
        "task": "classify", "mode": args.mode, "metrics": result["metrics"],
        "checkpoint": str(args.checkpoint),
        "backbone": args.backbone, "branch": args.branch, "data": str(args.data),
        "layout": splits.layout, "split": args.split, "num_classes": len(splits.classes),
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
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    print(f"classify ({args.mode}, {args.branch}) on {splits.layout} split {args.split}: "
          f"{metrics} over {summary['videos_evaluated']['test']} test videos -> {out}")
    return 0
