"""The evaluation commands' numbers, recomputed from the files they write.

Each ``constcl eval`` command runs end to end on the small synthetic worlds (random-init
``r3d_tiny``, the tiny settings of the other CLI tests); the test then reads what the command
wrote under ``--out`` and recomputes the reported metric with a naive, independent
implementation (plain Python / numpy loops written from the official protocols, none of the
project's metric functions) against the ground-truth files of the world:

* classify (linear): top-1 from the confusion matrix in ``results.json`` and the labels of the
  split files. The command writes no per-video predictions or scores, so its top-1 cannot be
  rebuilt from predictions and its top-5 cannot be recomputed at all.
* detect: frame mAP@0.5 (PASCAL VOC all-point AP per class) from ``predictions.csv`` and
  ``ava_val_v2.2.csv``, with both ground-truth and detected validation boxes.
* track: OTB precision@20px and success AUC from ``boxes/<target>.txt`` and
  ``groundtruth_rect.txt``.
* propagate: DAVIS J (and F) from ``masks/<seq>/*.png`` and ``Annotations/480p``.
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from constcl.cli import main
from tests.eval.eval_world import make_world

TINY = ["--checkpoint", "random", "--backbone", "r3d_tiny"]
CLIP = [*TINY, "--frames", "4", "--stride", "2", "--size", "64", "--workers", "0"]


@pytest.fixture(scope="module")
def eval_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 24-video world of the classify / detect tests (UCF101 and AVA layouts)."""
    return make_world(tmp_path_factory)


def _results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


# --------------------------------------------------------------------------- classify


def _ucf_test_labels(root: Path) -> tuple[list[str], list[int]]:
    """Class names in ``classInd.txt`` id order and the 0-based label of every test video."""
    lines = (root / "ucfTrainTestlist" / "classInd.txt").read_text().split()
    ids = {int(lines[i]): lines[i + 1] for i in range(0, len(lines), 2)}
    names = [ids[i] for i in sorted(ids)]
    labels = []
    for line in (root / "ucfTrainTestlist" / "testlist01.txt").read_text().splitlines():
        line = line.strip()
        if line:
            labels.append(names.index(line.split("/")[0]))
    return names, labels


def test_classify_top1_top5_from_predictions_and_confusion_matrix(eval_world: Path,
                                                                 tmp_path: Path) -> None:
    out = tmp_path / "classify"
    assert main(["eval", "classify", *CLIP, "--clips", "2", "--data", str(eval_world),
                 "--out", str(out), "--epochs", "20"]) == 0
    r = _results(out)
    names, labels = _ucf_test_labels(eval_world)
    assert r["classes"] == names
    assert r["videos_evaluated"]["test"] == len(labels) and not r["videos_failed"]["test"]
    cm = np.asarray(r["confusion_matrix"])
    assert cm.shape == (len(names), len(names))
    # rows are the true classes: every row holds exactly that class's test videos
    for c in range(len(names)):
        n_true = sum(1 for y in labels if y == c)
        assert sum(int(v) for v in cm[c]) == n_true, f"row {c} ({names[c]})"
    correct = sum(int(cm[c][c]) for c in range(len(names)))
    assert math.isclose(correct / len(labels), r["metrics"]["top1"], rel_tol=0, abs_tol=1e-12)
    # predictions.csv: one row per test video with its label and view-averaged class scores;
    # top-1 / top-5 recomputed from the scores, labels checked against the split file
    rows = _read_csv(out / "predictions.csv")
    assert rows[0] == ["video", "label", "prediction", "top5", "scores"]
    by_name = {}
    for line in (eval_world / "ucfTrainTestlist" / "testlist01.txt").read_text().split():
        by_name[Path(line).name] = names.index(line.split("/")[0])
    hits1 = hits5 = 0
    for video, label, prediction, top5, scores in rows[1:]:
        assert int(label) == by_name[Path(video).name], video
        values = [float(v) for v in scores.split()]
        ranked = sorted(range(len(values)), key=lambda c: (-values[c], c))
        assert int(prediction) == ranked[0] and [int(c) for c in top5.split()] == ranked[:5]
        hits1 += ranked[0] == int(label)
        hits5 += int(label) in ranked[:5]
        assert cm[int(label)][ranked[0]] > 0
    assert len(rows) - 1 == len(labels)
    assert math.isclose(hits1 / len(labels), r["metrics"]["top1"], abs_tol=1e-12)
    assert math.isclose(hits5 / len(labels), r["metrics"]["top5"], abs_tol=1e-12)


# --------------------------------------------------------------------------- detect


def _read_csv(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return [row for row in csv.reader(f) if row]


def _iou_xyxy(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _voc_ap(tp: list[int], num_gt: int) -> float:
    """All-point VOC AP of detections already in descending score order."""
    rec, prec, hits = [0.0], [0.0], 0
    for i, t in enumerate(tp, start=1):
        hits += t
        rec.append(hits / num_gt)
        prec.append(hits / i)
    rec.append(1.0)
    prec.append(0.0)
    for i in range(len(prec) - 2, -1, -1):  # precision envelope from the right
        prec[i] = max(prec[i], prec[i + 1])
    return sum((rec[i] - rec[i - 1]) * prec[i] for i in range(1, len(rec))
               if rec[i] != rec[i - 1])


def _naive_frame_ap(gt_rows: list[list[str]], det_rows: list[list[str]], classes: list[int],
                    excluded: set[tuple[str, int]]) -> dict[int, float]:
    """Per-class AP@0.5 of AVA rows ``vid, ts, x1, y1, x2, y2, action[, score]``."""
    gt: dict[int, dict[tuple[str, int], list[tuple[float, ...]]]] = {c: {} for c in classes}
    for row in gt_rows:
        key, c = (row[0], int(row[1])), int(row[6])
        if c in gt and key not in excluded:
            gt[c].setdefault(key, []).append(tuple(float(v) for v in row[2:6]))
    dets: dict[int, list[tuple[float, tuple[str, int], tuple[float, ...]]]] = {
        c: [] for c in classes}
    for row in det_rows:
        key, c, box = (row[0], int(row[1])), int(row[6]), tuple(float(v) for v in row[2:6])
        if c in dets and key not in excluded and box[2] > box[0] and box[3] > box[1]:
            dets[c].append((float(row[7]), key, box))
    aps = {}
    for c in classes:
        num_gt = sum(len(b) for b in gt[c].values())
        if num_gt == 0:
            continue
        taken = {key: [False] * len(b) for key, b in gt[c].items()}
        tp = []
        for _, key, box in sorted(dets[c], key=lambda d: -d[0]):
            best, best_j = -1.0, -1
            for j, g in enumerate(gt[c].get(key, [])):
                o = _iou_xyxy(box, g)
                if o > best:
                    best, best_j = o, j
            hit = best >= 0.5 and not taken[key][best_j]
            if hit:
                taken[key][best_j] = True
            tp.append(int(hit))
        aps[c] = _voc_ap(tp, num_gt)
    return aps


def _label_map_ids(ann: Path) -> list[int]:
    text = next(ann.glob("ava_action_list_v2.2*.pbtxt")).read_text()
    return sorted(int(tok.split()[1]) for tok in text.split("\n") if tok.strip().startswith("id:"))


@pytest.mark.parametrize("boxes", ["gt", "detections"])
def test_detect_map_from_predictions_csv(eval_world: Path, tmp_path: Path, boxes: str) -> None:
    out = tmp_path / f"detect-{boxes}"
    assert main(["eval", "detect", *CLIP, "--data", str(eval_world), "--out", str(out),
                 "--epochs", "10", "--boxes", boxes, "--det-thresh", "0.5"]) == 0
    r = _results(out)
    ann = eval_world / "ava" / "annotations"
    classes = _label_map_ids(ann)
    excl_file = ann / "ava_val_excluded_timestamps_v2.2.csv"
    excluded = {(row[0], int(row[1])) for row in _read_csv(excl_file)} if excl_file.is_file() \
        else set()
    gt_rows = _read_csv(ann / "ava_val_v2.2.csv")
    det_rows = _read_csv(out / "predictions.csv")
    assert det_rows and all(len(row) == 8 for row in det_rows)
    aps = _naive_frame_ap(gt_rows, det_rows, classes, excluded)
    assert aps, "no evaluated class has ground truth"
    table = {c["id"]: c for c in r["per_class"]}
    assert sorted(table) == classes
    for c in classes:
        n_gt = sum(1 for row in gt_rows if int(row[6]) == c and (row[0], int(row[1])) not in
                   excluded)
        assert table[c]["num_gt"] == n_gt, f"class {c}"
        if c in aps:
            assert table[c]["ap"] == pytest.approx(aps[c], abs=1e-6), f"AP of class {c}"
        else:
            assert table[c]["ap"] is None  # NaN in JSON: left out of the mean
    assert r["metrics"]["map"] == pytest.approx(sum(aps.values()) / len(aps), abs=1e-6)


# --------------------------------------------------------------------------- track


def _read_xywh(path: Path) -> list[list[float]]:
    rows = []
    for line in path.read_text().splitlines():
        fields = line.replace(",", " ").replace("\t", " ").split()
        if fields:
            assert len(fields) == 4, f"{path}: {line!r}"
            rows.append([float(v) for v in fields])
    return rows


def _naive_ope(pred: list[list[float]], gt: list[list[float]]) -> tuple[float, float, float]:
    """(precision@20px, success AUC, success rate@0.5) of one OTB sequence."""
    assert len(pred) == len(gt)
    pred = [gt[0], *pred[1:]]  # frame 1 is the initialisation: scored as the ground truth
    errors, ious = [], []
    for (px, py, pw, ph), (gx, gy, gw, gh) in zip(pred, gt, strict=True):
        errors.append(math.hypot(px + pw / 2 - gx - gw / 2, py + ph / 2 - gy - gh / 2))
        iw = max(0.0, min(px + pw, gx + gw) - max(px, gx))
        ih = max(0.0, min(py + ph, gy + gh) - max(py, gy))
        union = pw * ph + gw * gh - iw * ih
        ious.append(iw * ih / union if union > 0 else 0.0)
    n = len(gt)
    precision = sum(1 for e in errors if e <= 20) / n
    success = [sum(1 for o in ious if o > i / 20) / n for i in range(21)]
    return precision, sum(success) / 21, success[10]


def test_track_ope_from_written_boxes(tmp_path: Path, world: Path) -> None:
    out = tmp_path / "track"
    assert main(["eval", "track", *TINY, "--data", str(world), "--out", str(out),
                 "--device", "cpu", "--stage", "res3"]) == 0
    r = _results(out)
    targets = sorted(p.name for p in (world / "otb").iterdir() if (p / "img").is_dir())
    assert sorted(r["per_sequence"]) == targets and r["num_sequences"] == len(targets)
    per_seq = {}
    for name in targets:
        gt = _read_xywh(world / "otb" / name / "groundtruth_rect.txt")
        pred = _read_xywh(out / "boxes" / f"{name}.txt")
        per_seq[name] = _naive_ope(pred, gt)
        s = r["per_sequence"][name]
        assert s["frames"] == len(gt)
        assert s["precision_20"] == pytest.approx(per_seq[name][0], abs=1e-9), name
        assert s["success_auc"] == pytest.approx(per_seq[name][1], abs=1e-9), name
        assert s["success_rate"] == pytest.approx(per_seq[name][2], abs=1e-9), name
    # OTB / got10k: the benchmark score is the mean of the per-sequence curves
    m = r["metrics"]
    for i, key in enumerate(("precision_20", "success_auc", "success_rate")):
        expected = sum(v[i] for v in per_seq.values()) / len(per_seq)
        assert m[key] == pytest.approx(expected, abs=1e-9), key


# --------------------------------------------------------------------------- propagate


def _read_ids(folder: Path) -> tuple[list[str], np.ndarray]:
    files = sorted(folder.glob("*.png"))
    return [f.name for f in files], np.stack([np.asarray(Image.open(f)) for f in files])


def _boundary(mask: np.ndarray) -> np.ndarray:
    """davis2017-evaluation ``_seg2bmap`` at full size: a pixel differing from its east, south or
    south-east neighbour; the last row looks east only, the last column south only."""
    h, w = mask.shape
    b = np.zeros((h, w), dtype=bool)
    b[:-1, :-1] = ((mask[:-1, :-1] != mask[:-1, 1:]) | (mask[:-1, :-1] != mask[1:, :-1])
                   | (mask[:-1, :-1] != mask[1:, 1:]))
    b[-1, :-1] = mask[-1, :-1] != mask[-1, 1:]
    b[:-1, -1] = mask[:-1, -1] != mask[1:, -1]
    return b


def _dilate(b: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation with ``disk(r)``: OR of ``b`` shifted by every ``dy^2 + dx^2 <= r^2``."""
    h, w = b.shape
    out = np.zeros_like(b)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if dy * dy + dx * dx <= r * r:
                out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
                    b[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def _naive_f(gt: np.ndarray, pred: np.ndarray) -> float:
    r = math.ceil(0.008 * math.hypot(*gt.shape))
    gb, pb = _boundary(gt), _boundary(pred)
    n_gt, n_p = int(gb.sum()), int(pb.sum())
    if n_p == 0 and n_gt == 0:
        return 1.0
    if n_p == 0 or n_gt == 0:
        return 0.0  # (P, R) = (1, 0) or (0, 1)
    precision = int((pb & _dilate(gb, r)).sum()) / n_p
    recall = int((gb & _dilate(pb, r)).sum()) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_propagate_j_and_f_from_written_masks(tmp_path: Path, world: Path) -> None:
    out = tmp_path / "propagate"
    assert main(["eval", "propagate", *TINY, "--data", str(world), "--out", str(out),
                 "--device", "cpu", "--overlay-sequences", "0"]) == 0
    r = _results(out)
    davis = world / "davis"
    names = [n.strip() for n in (davis / "ImageSets" / "2017" / "val.txt").read_text().split()]
    assert list(r["per_sequence"]) == names
    j_objects, f_objects, j_recall, j_decay = [], [], [], []
    for seq in names:
        gt_files, gt = _read_ids(davis / "Annotations" / "480p" / seq)
        pred_files, pred = _read_ids(out / "masks" / seq)
        assert pred_files == gt_files and pred.shape == gt.shape
        gt = np.where(gt == 255, 0, gt)  # semi-supervised: void counts as background
        k = int(gt[0].max())
        assert int(pred.max()) <= k
        j_seq, f_seq = [], []
        for o in range(1, k + 1):
            js, fs = [], []
            for t in range(1, len(gt) - 1):  # first and last frames are not scored
                g, p = gt[t] == o, pred[t] == o
                union = int((g | p).sum())
                js.append(int((g & p).sum()) / union if union else 1.0)
                fs.append(_naive_f(g, p))
            j_seq.append(sum(js) / len(js))
            f_seq.append(sum(fs) / len(fs))
            j_recall.append(sum(1 for v in js if v > 0.5) / len(js))
            edges = [int(np.round(1 + i * (len(js) - 1) / 4 + 1e-10)) - 1 for i in range(5)]
            first, last = js[edges[0]:edges[1] + 1], js[edges[3]:edges[4] + 1]
            j_decay.append(sum(first) / len(first) - sum(last) / len(last))
            obj = r["per_object"][f"{seq}_{o}"]
            assert obj["J-Mean"] == pytest.approx(j_seq[-1], abs=1e-9), f"{seq} object {o}"
            assert obj["F-Mean"] == pytest.approx(f_seq[-1], abs=1e-9), f"{seq} object {o}"
        s = r["per_sequence"][seq]
        assert s["objects"] == k
        assert s["J-Mean"] == pytest.approx(sum(j_seq) / k, abs=1e-9), seq
        j_objects += j_seq
        f_objects += f_seq
    m = r["metrics"]
    assert r["num_objects"] == len(j_objects)
    # DAVIS averages over objects of all sequences, not over sequences
    j_mean, f_mean = sum(j_objects) / len(j_objects), sum(f_objects) / len(f_objects)
    assert m["J-Mean"] == pytest.approx(j_mean, abs=1e-9)
    assert m["F-Mean"] == pytest.approx(f_mean, abs=1e-9)
    assert m["J&F-Mean"] == pytest.approx((j_mean + f_mean) / 2, abs=1e-9)
    assert m["J-Recall"] == pytest.approx(sum(j_recall) / len(j_recall), abs=1e-9)
    assert m["J-Decay"] == pytest.approx(sum(j_decay) / len(j_decay), abs=1e-9)
