"""``constcl eval detect`` at its joints: the AVA-style mAP recomputed from known RoI features.

The encoder is replaced by a network whose res5 map is known (``CentreFrameCells``: the mean
colour of each 32 x 32 cell of the clip's centre frame, stride 32 like R3D's res5) and the
videos are written by the test: on each key frame every person is a box of one 32 x 32 cell
filled with the colour of its actions (one colour channel per action, two for a person with two
actions) and no other person in the 8 cells around it; on the frames around it the same boxes
carry a random colour code, unrelated to the actions. So the RoI feature of a box is its
person's code exactly when the box lands on its cell of the key frame, and anything else when
the clip is not centred on the key frame or a box is scaled to the wrong side of a landscape
frame.

* With the true labels, a closed-form multi-label classifier (least squares on the codes) ranks
  every class's boxes first, so every class's AP and the mAP must be 1, and the probe's own
  scores in ``predictions.csv`` must rank the same way (AP recomputed by a naive VOC loop).
* With the training labels relabelled by a derangement of the action ids, the probe must follow
  them: its best class for a one-action person is the deranged one, and the mAP on the true
  validation labels is 0.47 (a probe that read the validation labels would score 1).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from constcl.data.encode import write_video
from constcl.eval import detect
from constcl.eval.detect import task as detect_task

WIDTH, HEIGHT, CELL = 256, 128, 32  # landscape frames; a 4 x 8 grid of res5 cells
ROWS, COLS = HEIGHT // CELL, WIDTH // CELL
FPS, LENGTH, SECONDS = 25, 80, (1, 2, 3)  # key frames 25, 50, 75
ACTIONS = [2, 5, 7]  # label-map ids (not 0..C-1): channel 0, 1, 2
DERANGED = {2: 5, 5: 7, 7: 2}
ACTION_SETS = [(2,), (5,), (7,), (2, 5)]


class CentreFrameCells(nn.Module):
    """Stand-in for the frozen network: ``forward_features(x)["res5"]`` of a ``(B, 3, T, H, W)``
    clip in [-1, 1] is ``(B, 3, 1, H / 32, W / 32)``, the mean colour in [0, 1] of each 32 x 32
    cell of input frame ``T // 2``."""

    out_channels = 3

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        frame = (x[:, :, x.shape[2] // 2] + 1) / 2
        return {"res5": F.avg_pool2d(frame, CELL)[:, :, None]}


Person = tuple[str, int, tuple[float, float, float, float], tuple[int, ...]]


def _key_frame_people(rng: np.random.Generator) -> list[tuple[int, int, tuple[int, ...]]]:
    """2-3 people ``(row, col, actions)`` on cells none of which touches another."""
    people: list[tuple[int, int, tuple[int, ...]]] = []
    while len(people) < rng.integers(2, 4):
        r, c = int(rng.integers(0, ROWS)), int(rng.integers(0, COLS))
        if all(max(abs(r - pr), abs(c - pc)) > 1 for pr, pc, _ in people):
            people.append((r, c, ACTION_SETS[int(rng.integers(0, len(ACTION_SETS)))]))
    return people


def _write_video(path: Path, people: dict[int, list[tuple[int, int, tuple[int, ...]]]],
                 rng: np.random.Generator) -> None:
    frames = np.zeros((LENGTH, HEIGHT, WIDTH, 3), np.uint8)
    for second, persons in people.items():
        key = second * FPS
        for r, c, actions in persons:
            code = np.zeros(3, np.uint8)
            code[[ACTIONS.index(a) for a in actions]] = 220
            cell = (slice(r * CELL, (r + 1) * CELL), slice(c * CELL, (c + 1) * CELL))
            # around the key frame the box shows a random code, unrelated to its actions
            frames[key - 8:key + 9, cell[0], cell[1]] = rng.integers(0, 2, 3) * 220
            frames[key, cell[0], cell[1]] = code
    write_video(path, frames, fps=FPS, options={"crf": "0"})


def _ava_world(root: Path, deranged: bool) -> dict[str, list[Person]]:
    """``ava/annotations`` + ``ava/videos`` with 3 training and 2 validation videos; returns the
    people of each split with their true actions."""
    rng = np.random.default_rng(0)
    ann, videos = root / "ava" / "annotations", root / "ava" / "videos"
    ann.mkdir(parents=True)
    videos.mkdir(parents=True)
    (ann / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").write_text("".join(
        f'item {{\n  name: "action {a}"\n  id: {a}\n}}\n' for a in ACTIONS))
    split_people: dict[str, list[Person]] = {}
    for split, count in (("train", 3), ("val", 2)):
        rows, persons = [], []
        for v in range(count):
            vid = f"{split}{v}"
            people = {s: _key_frame_people(rng) for s in SECONDS}
            _write_video(videos / f"{vid}.mp4", people, rng)
            for second, ps in people.items():
                for pid, (r, c, actions) in enumerate(ps):
                    box = (c / COLS, r / ROWS, (c + 1) / COLS, (r + 1) / ROWS)
                    persons.append((vid, second, box, actions))
                    written = [DERANGED[a] for a in actions] if deranged and split == "train" \
                        else actions
                    rows += [[vid, f"{second:04d}", *(f"{v:.3f}" for v in box), a, pid]
                             for a in written]
        with open(ann / f"ava_{split}_v2.2.csv", "w", newline="") as f:
            csv.writer(f).writerows(rows)
        split_people[split] = persons
    return split_people


def _code(actions: tuple[int, ...]) -> np.ndarray:
    """The RoI feature of a person: its key-frame cell's colour in [0, 1] (220 / 255 per action)."""
    code = np.zeros(3)
    code[[ACTIONS.index(a) for a in actions]] = 220 / 255
    return code


def _voc_ap(ranked_hits: list[bool]) -> float:
    """All-point VOC AP of a ranked list of hits (every positive is in the list)."""
    positives, hits, precisions = sum(ranked_hits), 0, []
    for i, hit in enumerate(ranked_hits, start=1):
        hits += hit
        precisions.append(hits / i)
    ap, recall = 0.0, 0.0
    for i, hit in enumerate(ranked_hits):
        if hit:  # recall rises by 1 / positives here; the envelope is the best precision after
            ap += max(precisions[i:]) / positives
            recall += 1 / positives
    return ap


def _naive_aps(people: list[Person], scores: np.ndarray) -> dict[int, float]:
    """Per-class AP of one detection per (GT) box with ``scores (N, C)``: the boxes are the
    ground truth and touch no other box, so a detection is a hit iff its person has the class."""
    aps = {}
    for j, a in enumerate(ACTIONS):
        order = sorted(range(len(people)), key=lambda i: -scores[i, j])
        aps[a] = _voc_ap([a in people[i][3] for i in order])
    return aps


def _probe_scores(out: Path, people: list[Person]) -> np.ndarray:
    """``(N, C)`` scores of ``predictions.csv`` for each person, matched by key frame and box."""
    index = {(vid, ts, tuple(round(v, 3) for v in box)): i
             for i, (vid, ts, box, _) in enumerate(people)}
    scores = np.full((len(people), len(ACTIONS)), np.nan)
    with open(out / "predictions.csv", newline="") as f:
        for row in csv.reader(f):
            key = (row[0], int(row[1]), tuple(float(v) for v in row[2:6]))
            scores[index[key], ACTIONS.index(int(row[6]))] = float(row[7])
    assert not np.isnan(scores).any(), "a validation box or class has no detection row"
    return scores


@pytest.mark.parametrize("deranged", [False, True], ids=["labels", "deranged-labels"])
def test_detect_map_recomputed_from_known_roi_features(tmp_path: Path, deranged: bool,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(detect_task, "load_encoder", lambda choice: CentreFrameCells())
    people = _ava_world(tmp_path, deranged)
    result = detect.run(detect.Settings(
        checkpoint="random", backbone="r3d_tiny", data=tmp_path, out=tmp_path / "out",
        frames=4, stride=2, size=HEIGHT, epochs=60, device="cpu", workers=0))
    train, val = people["train"], people["val"]
    assert result["boxes_encoded"] == {"train": len(train), "val": len(val)}
    reported = {c["id"]: c["ap"] for c in result["per_class"]}
    assert sorted(reported) == ACTIONS
    for a in ACTIONS:
        assert {c["id"]: c["num_gt"] for c in result["per_class"]}[a] == sum(
            a in p[3] for p in val)
    # the probe's own scores, AP recomputed by a naive loop
    probe = _probe_scores(tmp_path / "out", val)
    probe_aps = _naive_aps(val, probe)
    for a in ACTIONS:
        assert reported[a] == pytest.approx(probe_aps[a], abs=1e-9), f"AP of action {a}"
    assert result["metrics"]["map"] == pytest.approx(np.mean(list(probe_aps.values())),
                                                     abs=1e-9)
    if not deranged:
        # closed form on the known codes: least squares to the multi-hot labels, with a bias
        def design(ps: list[Person]) -> np.ndarray:
            return np.array([[*_code(p[3]), 1.0] for p in ps])

        targets = np.array([[a in p[3] for a in ACTIONS] for p in train], dtype=float)
        w, *_ = np.linalg.lstsq(design(train), targets, rcond=None)
        assert _naive_aps(val, design(val) @ w) == pytest.approx(dict.fromkeys(ACTIONS, 1.0))
        assert result["metrics"]["map"] == pytest.approx(1.0, abs=1e-9)
    else:
        for i, (_, _, _, actions) in enumerate(val):
            if len(actions) == 1:
                best = ACTIONS[int(np.argmax(probe[i]))]
                assert best == DERANGED[actions[0]], f"box {i}: {best} for {actions}"
        assert result["metrics"]["map"] <= 0.5  # 0.467 (a probe of the val labels: 1)
