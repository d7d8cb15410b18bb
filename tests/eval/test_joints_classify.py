"""``constcl eval classify`` at its joints: every mode's number recomputed from the features.

The recompute tests of ``test_outputs_recompute.py`` start from the files a run writes, so a run
that trains its probe on the wrong labels or queries the wrong bank writes self-consistent files
and passes them. Here the encoder is replaced by a network whose output is known (``GridMeans``:
the mean colour of each quadrant of the clip) and the videos are written by the test, so the
features of every view are known by construction. Each mode's reported number is then compared
with an independent computation of the documented protocol, written here:

* linear probe and fine-tuning: on colour-coded classes (linearly separable features) a
  closed-form classifier (least squares on one-hot targets) is perfect, and the reported top-1
  and every prediction must agree with it; with the training labels of ``trainlist01.txt``
  relabelled by a derangement of the classes, the probe must follow them (top-1 exactly 0 and
  every prediction the deranged class), which a probe that trained on the test labels would not;
* kNN: recall@1/5/10 recomputed by brute force (each view L2-normalised, views averaged per
  video, test videos query the training videos by cosine) on random features whose two temporal
  views differ in length and direction, with an undecodable test video in the middle of the list.
  The test first checks that the world tells the documented protocol apart from its plausible
  misreadings (no per-view normalisation, train querying test, labels not re-indexed after the
  failed video).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from constcl.data.decode import decode_frames
from constcl.data.encode import write_video
from constcl.engine.export import export_backbone
from constcl.eval import classify
from constcl.eval.classify import task as classify_task
from tests.eval.test_export_branches import TRUNK, config_of, trained_model

SIZE, LENGTH = 32, 16  # frames are SIZE x SIZE, LENGTH frames long
FRAMES, STRIDE, CLIPS = 2, 4, 2  # test views: span 5, starts 0 and floor(11 / 2) = 5
# classInd.txt order differs from the sorted order of the names (label = id - 1)
CLASSES = ["Zebra", "Apple", "Mango"]
COLOURS = np.array([[220, 40, 40], [40, 220, 40], [40, 40, 220]])
DERANGEMENT = [1, 2, 0]  # class k is listed as class DERANGEMENT[k] in the deranged trainlist


class GridMeans(nn.Module):
    """Stand-in for the frozen network: ``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, 12)``, the mean of
    each colour channel over time and over each quadrant of the frame."""

    out_channels = 12

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        return x.reshape(b, c, t, 2, h // 2, 2, w // 2).mean(dim=(2, 4, 6)).flatten(1)


def _grid_means(frames: np.ndarray) -> np.ndarray:
    """``GridMeans`` of decoded uint8 frames ``(T, H, W, 3)``, in numpy: ``(12,)``."""
    x = frames.astype(np.float64) / 127.5 - 1.0
    h, w = x.shape[1] // 2, x.shape[2] // 2
    return np.array([[x[:, i * h:(i + 1) * h, j * w:(j + 1) * w, ch].mean()
                      for i in range(2) for j in range(2)] for ch in range(3)]).reshape(-1)


@pytest.fixture
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classify_task, "load_encoder", lambda choice: GridMeans())


def _write_ucf(root: Path, videos: dict[str, np.ndarray], labels: dict[str, int],
               train: list[str], test: list[str], train_ids: dict[str, int] | None = None
               ) -> None:
    """A UCF101-layout world: ``videos/<Class>/<name>.mp4``, ``classInd.txt``, split 1.

    ``train_ids`` overrides the class id written into ``trainlist01.txt`` (1-based)."""
    split = root / "ucfTrainTestlist"
    split.mkdir(parents=True)
    (split / "classInd.txt").write_text("".join(f"{i + 1} {c}\n" for i, c in
                                                enumerate(CLASSES)))
    for name, frames in videos.items():
        folder = root / "videos" / CLASSES[labels[name]]
        folder.mkdir(parents=True, exist_ok=True)
        if frames.size:
            write_video(folder / f"{name}.mp4", frames, fps=25, options={"crf": "0"})
        else:  # an undecodable file
            (folder / f"{name}.mp4").write_bytes(np.random.default_rng(1).bytes(3000))
    ids = train_ids or {n: labels[n] + 1 for n in train}
    (split / "trainlist01.txt").write_text(
        "".join(f"{CLASSES[labels[n]]}/{n}.mp4 {ids[n]}\r\n" for n in train))
    (split / "testlist01.txt").write_text(
        "".join(f"{CLASSES[labels[n]]}/{n}.mp4\r\n" for n in test))


def _settings(root: Path, out: Path, mode: str, **extra) -> classify.Settings:
    return classify.Settings(checkpoint="random", backbone="r3d_tiny", data=root, out=out,
                             mode=mode, frames=FRAMES, stride=STRIDE, size=SIZE, clips=CLIPS,
                             crops=1, device="cpu", workers=0, **extra)


def _predictions(out: Path) -> dict[str, tuple[int, int]]:
    """``{video stem: (label, prediction)}`` from ``predictions.csv``."""
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {Path(r["video"]).stem: (int(r["label"]), int(r["prediction"])) for r in rows}


# --------------------------------------------------------------------------- linear, fine-tune


def _colour_world(root: Path, deranged: bool) -> tuple[dict[str, int], list[str], list[str]]:
    """Three videos per class and split, each a still frame of its class colour +- 25 levels.
    Train and test have the same size and list their videos in different orders."""
    rng = np.random.default_rng(0)
    videos, labels = {}, {}
    for k in range(len(CLASSES)):
        for i in range(6):
            name = f"v_{CLASSES[k]}_g{i:02d}"
            colour = np.clip(COLOURS[k] + rng.integers(-25, 26, 3), 0, 255)
            videos[name] = np.broadcast_to(colour.astype(np.uint8), (LENGTH, SIZE, SIZE, 3))
            labels[name] = k
    names = list(videos)
    train = [names[i] for i in rng.permutation(len(names)) if int(names[i][-2:]) < 3]
    test = [n for n in reversed(names) if int(n[-2:]) >= 3]
    train_ids = {n: DERANGEMENT[labels[n]] + 1 for n in train} if deranged else None
    _write_ucf(root, videos, labels, train, test, train_ids)
    return labels, train, test


def _closed_form_predictions(root: Path, labels: dict[str, int], train: list[str],
                             test: list[str], deranged: bool) -> dict[str, int]:
    """Least squares on one-hot targets (with a bias) over the decoded test views' grid means,
    one feature per video (its views averaged): the closed-form linear classifier."""
    def feature(name: str) -> np.ndarray:
        path = root / "videos" / CLASSES[labels[name]] / f"{name}.mp4"
        return _grid_means(decode_frames(path, list(range(LENGTH)), short_side=SIZE))

    y = np.array([DERANGEMENT[labels[n]] if deranged else labels[n] for n in train])
    x = np.array([[*feature(n), 1.0] for n in train])
    w, *_ = np.linalg.lstsq(x, np.eye(len(CLASSES))[y], rcond=None)
    return {n: int(np.argmax(np.array([*feature(n), 1.0]) @ w)) for n in test}


def _check_classifier_run(result: dict, out: Path, labels: dict[str, int], expected:
                          dict[str, int]) -> None:
    preds = _predictions(out)
    assert result["classes"] == CLASSES
    assert set(preds) == set(expected)
    for name, (label, prediction) in preds.items():
        assert label == labels[name], f"{name}: label {label}, split file says {labels[name]}"
        assert prediction == expected[name], f"{name}: {prediction} vs closed form {expected[name]}"
    top1 = sum(expected[n] == labels[n] for n in expected) / len(expected)
    assert result["metrics"]["top1"] == pytest.approx(top1, abs=1e-12)


@pytest.mark.parametrize("deranged", [False, True], ids=["labels", "deranged-labels"])
def test_linear_probe_follows_the_training_labels(tmp_path: Path, fake_encoder: None,
                                                  deranged: bool) -> None:
    root = tmp_path / "world"
    labels, train, test = _colour_world(root, deranged)
    expected = _closed_form_predictions(root, labels, train, test, deranged)
    # the features are separable: the closed form is perfect, and with deranged training labels
    # it predicts the deranged class of every test video (top-1 exactly 0)
    want = {n: DERANGEMENT[labels[n]] if deranged else labels[n] for n in test}
    assert expected == want
    result = classify.run(_settings(root, tmp_path / "out", "linear", epochs=30))
    _check_classifier_run(result, tmp_path / "out", labels, expected)
    assert result["videos_evaluated"] == {"train": len(train), "test": len(test)}
    assert result["metrics"]["top1"] == (0.0 if deranged else 1.0)


@pytest.mark.parametrize("deranged", [False, True], ids=["labels", "deranged-labels"])
def test_finetune_follows_the_training_labels(tmp_path: Path, fake_encoder: None,
                                              deranged: bool) -> None:
    """Fine-tuning trains a new head on the stand-in backbone (it has no weights of its own):
    random crops and flips keep a still frame's colour, so the classes stay separable."""
    root = tmp_path / "world"
    labels, train, test = _colour_world(root, deranged)
    expected = _closed_form_predictions(root, labels, train, test, deranged)
    result = classify.run(_settings(root, tmp_path / "out", "finetune", epochs=20, lr=0.5,
                                    batch_size=3))
    _check_classifier_run(result, tmp_path / "out", labels, expected)
    assert result["metrics"]["top1"] == (0.0 if deranged else 1.0)


# --------------------------------------------------------------------------- kNN


def _random_world(root: Path, seed: int) -> tuple[dict[str, int], list[str], list[str]]:
    """12 training and 9 test videos of random classes; each video's frames 0-4 (the first
    test view) hold one random colour per quadrant far from grey, frames 5-15 (the second) a
    weak random one near grey, so the two views differ in length and direction. Test video 3 is
    not a video."""
    rng = np.random.default_rng(seed)
    videos, labels = {}, {}
    for i in range(21):
        strong = rng.choice([rng.integers(20, 70), rng.integers(185, 236)], size=(2, 2, 3))
        weak = rng.integers(100, 156, (2, 2, 3))
        quads = np.concatenate([np.repeat(strong[None], 5, 0), np.repeat(weak[None], 11, 0)])
        frames = np.repeat(np.repeat(quads, SIZE // 2, axis=1), SIZE // 2, axis=2)
        name = f"v_{'train' if i < 12 else 'test'}_{i:02d}"
        videos[name] = frames.astype(np.uint8)
        labels[name] = int(rng.integers(0, len(CLASSES)))
    videos["v_test_broken"] = np.zeros(0, np.uint8)
    labels["v_test_broken"] = 0
    train = [n for n in videos if "train" in n]
    test = [n for n in videos if "test" in n and n != "v_test_broken"]
    test.insert(3, "v_test_broken")
    _write_ucf(root, videos, labels, train, test)
    return labels, train, test


def _view_features(root: Path, name: str, label: int) -> np.ndarray:
    """``(CLIPS, 12)``: the stand-in's output on each test view at its documented frames
    (view i of N starts at floor(delta * i / N), delta = length - span; FRAMES every STRIDE)."""
    path = root / "videos" / CLASSES[label] / f"{name}.mp4"
    span = (FRAMES - 1) * STRIDE + 1
    starts = [(LENGTH - span) * i // CLIPS for i in range(CLIPS)]
    return np.stack([_grid_means(decode_frames(path, [s + STRIDE * k for k in range(FRAMES)],
                                               short_side=SIZE)) for s in starts])


def _naive_recall(query: list[np.ndarray], q_labels: list[int], bank: list[np.ndarray],
                  b_labels: list[int], normalise_views: bool = True) -> dict[int, float]:
    """Hit rate at 1, 5, 10: a query hits when one of its k most cosine-similar bank videos
    (ties: bank order) has its class."""
    def video(views: np.ndarray) -> np.ndarray:
        if normalise_views:
            views = views / np.linalg.norm(views, axis=1, keepdims=True)
        v = views.mean(axis=0)
        return v / np.linalg.norm(v)

    bank_v = [video(b) for b in bank]
    out = {}
    for k in (1, 5, 10):
        hits = 0
        for q, y in zip(query, q_labels, strict=True):
            qv = video(q)
            sims = [float(qv @ b) for b in bank_v]
            order = sorted(range(len(bank_v)), key=lambda j: (-sims[j], j))
            hits += any(b_labels[j] == y for j in order[:k])
        out[k] = hits / len(query)
    return out


def test_knn_recall_recomputed_by_brute_force(tmp_path: Path, fake_encoder: None) -> None:
    root = tmp_path / "world"
    labels, train, test = _random_world(root, seed=3)
    good = [n for n in test if n != "v_test_broken"]
    feats = {n: _view_features(root, n, labels[n]) for n in train + good}
    q, q_y = [feats[n] for n in good], [labels[n] for n in good]
    b, b_y = [feats[n] for n in train], [labels[n] for n in train]
    want = _naive_recall(q, q_y, b, b_y)
    # the world separates the protocol from its misreadings
    misread = {
        "views not normalised": _naive_recall(q, q_y, b, b_y, normalise_views=False),
        "train queries test": _naive_recall(b, b_y, q, q_y),
        "labels not re-indexed after the failed video": _naive_recall(
            q, [labels[n] for n in test[:len(good)]], b, b_y),
    }
    for what, other in misread.items():
        assert other != want, f"the world does not tell '{what}' apart"
    result = classify.run(_settings(root, tmp_path / "out", "knn"))
    assert result["videos_evaluated"] == {"train": len(train), "test": len(good)}
    assert [int(i) for i in result["videos_failed"]["test"]] == [test.index("v_test_broken")]
    got = {k: result["metrics"][f"recall@{k}"] for k in (1, 5, 10)}
    assert got == pytest.approx(want, abs=1e-12)


def test_knn_reads_the_branch_it_names(tmp_path: Path) -> None:
    """A Y-shape checkpoint whose two res5 copies differ: kNN on each branch, the two runs
    sharing one feature cache, must give the recall of that branch's own features (computed
    here stage by stage from the model that was exported)."""
    model = trained_model()
    path = export_backbone(model, tmp_path / "backbone.safetensors", config_of("constcl", "y"))
    root = tmp_path / "world"
    labels, train, test = _random_world(root, seed=3)
    good = [n for n in test if n != "v_test_broken"]
    span = (FRAMES - 1) * STRIDE + 1
    starts = [(LENGTH - span) * i // CLIPS for i in range(CLIPS)]

    def views(name: str, res5: nn.Module) -> np.ndarray:
        file = root / "videos" / CLASSES[labels[name]] / f"{name}.mp4"
        clips = np.stack([decode_frames(file, [s + STRIDE * k for k in range(FRAMES)],
                                        short_side=SIZE) for s in starts])
        x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        with torch.no_grad():
            for stage in TRUNK:
                x = getattr(model.backbone, stage)(x)
            return res5(x).mean(dim=(2, 3, 4)).double().numpy()

    want = {}
    for branch, res5 in (("global", model.backbone.res5), ("local", model.res5_local)):
        feats = {n: views(n, res5) for n in train + good}
        want[branch] = _naive_recall([feats[n] for n in good], [labels[n] for n in good],
                                     [feats[n] for n in train], [labels[n] for n in train])
    assert want["global"] != want["local"], "the world does not tell the branches apart"
    for branch in ("global", "local"):
        result = classify.run(classify.Settings(
            checkpoint=path, data=root, out=tmp_path / branch, mode="knn", branch=branch,
            frames=FRAMES, stride=STRIDE, size=SIZE, clips=CLIPS, crops=1, device="cpu",
            workers=0, cache_dir=tmp_path / "cache"))
        got = {k: result["metrics"][f"recall@{k}"] for k in (1, 5, 10)}
        assert got == pytest.approx(want[branch], abs=1e-12), branch
