"""Qualitative panels of a bench report: the same inputs through every encoder, side by side.

Each panel is one PNG with a row per encoder (and a ground-truth row where the prediction is
drawn apart from it) and a column per frame; detection has a column per encoder and a row per
key frame:

* tracking: predicted box (encoder colour) and ground-truth box (white, dashed) over frames of
  one OTB-style sequence, read from the task's ``boxes/<seq>.txt`` and the sequence's
  ``groundtruth_rect*.txt`` (``x, y, w, h`` in pixels);
* propagation: predicted masks (``masks/<seq>/%05d.png``) blended on the frames, under the
  ground-truth row, with ``eval.propagate.overlay.overlay``;
* detection: every box of a few validation key frames (one per video) with the class the
  probe scored highest (``predictions.csv``), green when that class is one of the box's true
  actions, red otherwise; the ground-truth column names the true actions.

``Panel`` names an encoder's task folder; functions return the PNG path, or None when the
inputs are missing (an encoder whose task did not run is drawn as an empty row).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from PIL import Image  # noqa: E402

from constcl.report.charts import encoder_colour  # noqa: E402

__all__ = ["Panel", "detection_panel", "file_stem", "predicted_labels", "propagation_panel",
           "tracking_panel"]


@dataclass(frozen=True)
class Panel:
    """One row of a panel: its title, colour key (the encoder) and the task's output folder."""

    title: str
    encoder: str
    folder: Path


def file_stem(name: str) -> str:
    """``name`` reduced to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "x"


def _results(folder: Path) -> dict | None:
    path = folder / "results.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _grid(rows: int, cols: int, cell: float = 1.35) -> tuple[plt.Figure, np.ndarray]:
    fig, axes = plt.subplots(rows, cols, figsize=(cell * cols + 1.2, cell * rows + 0.4),
                             squeeze=False)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig, axes


def _row_label(ax, text: str, colour: str) -> None:
    ax.set_ylabel(text, fontsize=7, color=colour, rotation=0, ha="right", va="center",
                  labelpad=4)


def _save(fig: plt.Figure, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _frames_to_show(count: int, shown: int) -> list[int]:
    return sorted({int(round(v)) for v in np.linspace(0, count - 1, shown)})


def _xywh_rect(box: Sequence[float], **style) -> Rectangle:
    x, y, w, h = box
    return Rectangle((x - 1, y - 1), w, h, fill=False, **style)  # OTB x, y are 1-based


def tracking_panel(rows: list[Panel], sequence: str, path: Path, frames: int = 5) -> Path | None:
    """Predicted vs ground-truth boxes of ``sequence`` for every encoder (rows)."""
    from constcl.eval.track.data import load_sequences

    first = next((r for r in (_results(p.folder) for p in rows) if r), None)
    if first is None:
        return None
    seq = next((s for s in load_sequences(first["data"]) if s.name == sequence), None)
    if seq is None:
        return None
    shown = _frames_to_show(len(seq.frames), frames)
    images = {t: np.asarray(Image.open(seq.frames[t]).convert("RGB")) for t in shown}
    fig, axes = _grid(len(rows), len(shown))
    for i, row in enumerate(rows):
        pred_file = row.folder / "boxes" / f"{sequence}.txt"
        pred = np.loadtxt(pred_file, delimiter=",", ndmin=2) if pred_file.is_file() else None
        res = _results(row.folder) or {}
        score = res.get("per_sequence", {}).get(sequence, {}).get("success_auc")
        colour = encoder_colour(row.encoder)
        _row_label(axes[i, 0], row.title + (f"\nAUC {100 * score:.0f}" if score is not None
                                            else "\n(no output)"), colour)
        for j, t in enumerate(shown):
            ax = axes[i, j]
            ax.imshow(images[t])
            ax.add_patch(_xywh_rect(seq.boxes[t], edgecolor="white", linestyle="--",
                                    linewidth=1.2))
            if pred is not None and t < len(pred):
                ax.add_patch(_xywh_rect(pred[t], edgecolor=colour, linewidth=1.8))
            if i == 0:
                ax.set_title(f"frame {t}", fontsize=7)
    return _save(fig, path, f"tracking {sequence}: prediction (colour) vs ground truth "
                            "(white, dashed); AUC = success AUC of this sequence (%)")


def _read_ids(path: Path) -> np.ndarray | None:
    if not path.is_file():
        return None
    with Image.open(path) as im:
        return np.asarray(im)


def propagation_panel(rows: list[Panel], sequence: str, path: Path,
                      frames: int = 5) -> Path | None:
    """Ground-truth masks (first row) and every encoder's propagated masks, on the frames."""
    from constcl.eval.propagate.data import load_sequences, read_annotations, read_frames
    from constcl.eval.propagate.overlay import overlay

    first = next((r for r in (_results(p.folder) for p in rows) if r), None)
    if first is None:
        return None
    seqs = load_sequences(first["data"], first.get("split", "val"))
    seq = next((s for s in seqs if s.name == sequence), None)
    if seq is None:
        return None
    shown = _frames_to_show(len(seq.frames), frames)
    images = read_frames([seq.frames[t] for t in shown])
    gt, palette = read_annotations([seq.annotations[t] for t in shown])
    fig, axes = _grid(len(rows) + 1, len(shown))
    _row_label(axes[0, 0], "ground truth", "black")
    for j, t in enumerate(shown):
        axes[0, j].imshow(overlay(images[j], gt[j], palette))
        axes[0, j].set_title(f"frame {t}" + (" (given)" if t == 0 else ""), fontsize=7)
    for i, row in enumerate(rows, start=1):
        res = _results(row.folder) or {}
        score = res.get("per_sequence", {}).get(sequence, {}).get("J&F-Mean")
        _row_label(axes[i, 0], row.title + (f"\nJ&F {100 * score:.0f}" if score is not None
                                            else "\n(no output)"), encoder_colour(row.encoder))
        for j, t in enumerate(shown):
            ids = _read_ids(row.folder / "masks" / sequence / seq.annotations[t].name)
            axes[i, j].imshow(images[j] if ids is None else overlay(images[j], ids, palette))
    return _save(fig, path, f"propagation {sequence}: masks blended on the frames (frame 0 "
                            "given); J&F of this sequence (%)")


def predicted_labels(predictions: Path) -> dict[tuple[str, int, tuple[float, ...]],
                                                 tuple[int, float]]:
    """``predictions.csv`` -> {(video, timestamp, box): (class with the top score, score)}."""
    best: dict[tuple[str, int, tuple[float, ...]], tuple[int, float]] = {}
    with open(predictions, newline="") as f:
        for vid, ts, x1, y1, x2, y2, c, s in csv.reader(f):
            key = (vid, int(ts), tuple(round(float(v), 3) for v in (x1, y1, x2, y2)))
            if key not in best or float(s) > best[key][1]:
                best[key] = (int(c), float(s))
    return best


def _key_frame_image(results: dict, video: str, timestamp: int) -> np.ndarray | None:
    from constcl.data.decode import decode_frames, probe
    from constcl.eval.detect.data import find_ava_files, timestamp_to_frame, video_paths

    files = find_ava_files(results["data"])
    paths = video_paths(files.videos, {video})
    if video not in paths:
        return None
    clip = results.get("clip", {})
    fps = clip.get("fps") or probe(paths[video]).fps
    index = timestamp_to_frame(timestamp, fps, clip.get("time_offset") or 0.0)
    return decode_frames(paths[video], [index])[0]


def detection_panel(rows: list[Panel], path: Path, key_frames: int = 3) -> Path | None:
    """The first validation key frame of each of the first ``key_frames`` videos: the true
    actions, then each encoder's top class per box (green: one of the box's true actions; red:
    not)."""
    from constcl.eval.detect.data import find_ava_files, load_label_map
    from constcl.eval.metrics.ava_map import read_ava_groundtruth_csv

    first = next((r for r in (_results(p.folder) for p in rows) if r), None)
    if first is None:
        return None
    files = find_ava_files(first["data"])
    names = load_label_map(files)
    truth: dict[tuple[str, int], dict[tuple[float, ...], set[int]]] = {}
    for vid, ts, x1, y1, x2, y2, c, *_ in read_ava_groundtruth_csv(files.val):
        box = tuple(round(float(v), 3) for v in (x1, y1, x2, y2))
        truth.setdefault((vid, int(ts)), {}).setdefault(box, set()).add(int(c))
    keys: list[tuple[str, int]] = []  # the first key frame of each of the first videos
    for key in truth:
        if len(keys) < key_frames and key[0] not in {k[0] for k in keys}:
            keys.append(key)
    images = {k: _key_frame_image(first, *k) for k in keys}
    fig, axes = _grid(len(keys), len(rows) + 1, cell=1.9)  # a row per key frame
    predictions = {row: predicted_labels(row.folder / "predictions.csv")
                   if (row.folder / "predictions.csv").is_file() else {} for row in rows}
    for i, key in enumerate(keys):
        image = images[key]
        h, w = image.shape[:2] if image is not None else (1, 1)
        axes[i, 0].set_ylabel(f"{key[0]}\n@ {key[1]} s", fontsize=6)
        for j in range(len(rows) + 1):
            ax = axes[i, j]
            if image is not None:
                ax.imshow(image)
            for box, classes in truth[key].items():
                x1, y1, x2, y2 = box
                if j == 0:
                    colour, text = "white", ", ".join(names.get(c, str(c)) for c in sorted(classes))
                else:
                    c, s = predictions[rows[j - 1]].get((*key, box), (None, 0.0))
                    if c is None:
                        continue
                    colour = "#2ca02c" if c in classes else "#d62728"
                    text = f"{names.get(c, c)} {s:.2f}"
                ax.add_patch(Rectangle((x1 * w, y1 * h), (x2 - x1) * w, (y2 - y1) * h,
                                       fill=False, edgecolor=colour, linewidth=1.6))
                ax.text(x1 * w + 1, y1 * h + 1, text, fontsize=6, va="top", color="black",
                        bbox={"facecolor": colour, "alpha": 0.8, "pad": 0.6, "linewidth": 0})
    axes[0, 0].set_title("ground truth", fontsize=7)
    for j, row in enumerate(rows, start=1):
        res = _results(row.folder) or {}
        score = res.get("metrics", {}).get("map")
        axes[0, j].set_title(row.title + (f"\nmAP {100 * score:.0f}" if score is not None
                                          else "\n(no output)"), fontsize=7,
                             color=encoder_colour(row.encoder))
    return _save(fig, path, "detection: top-scored class per box (green: a true action, red: "
                            "not) with its score; mAP over the whole validation set (%)")
