"""The synthetic world: determinism, ground-truth consistency, balance, decodability, formats."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from constcl import cli
from constcl.data import sources
from constcl.data.palette import davis_palette
from constcl.data.synth import generate_world
from constcl.data.synth.video import MIN_VISIBLE
from constcl.data.synth.world import WorldParams, plan_jobs

VIDEOS, SIZE, FRAMES, FPS = 12, 128, 64, 25
ANNOTATIONS = (
    "videos.csv",
    "summary.json",
    "kinetics/train.csv",
    "kinetics/validate.csv",
    "slowfast/train.csv",
    "slowfast/val.csv",
    "ucfTrainTestlist/classInd.txt",
    "ucfTrainTestlist/trainlist01.txt",
    "ucfTrainTestlist/testlist01.txt",
    "ava/annotations/ava_train_v2.2.csv",
    "ava/annotations/ava_val_v2.2.csv",
    "ava/annotations/ava_train_predicted_boxes.csv",
    "ava/annotations/ava_val_predicted_boxes.csv",
    "ava/annotations/ava_action_list_v2.2_for_activitynet_2019.pbtxt",
    "davis/ImageSets/2017/train.txt",
    "davis/ImageSets/2017/val.txt",
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-video world with DAVIS/OTB for every video, rendered by a pool of 2 processes."""
    root = tmp_path_factory.mktemp("synth") / "a"
    generate_world(root, VIDEOS, seed=0, workers=2, tracks="all")
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def _ava(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """Tight pixel-edge box x1, y1, x2, y2 of a boolean mask."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _masks(world: Path, video_id: str) -> np.ndarray:
    folder = world / "davis/Annotations/480p" / video_id
    return np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])


# ---------------------------------------------------------------- determinism and reuse


def test_same_seed_gives_identical_files(world: Path, tmp_path: Path) -> None:
    generate_world(tmp_path / "b", VIDEOS, seed=0, workers=1, tracks="all")
    a, b = _files(world), _files(tmp_path / "b")
    assert a.keys() == b.keys()
    for name in ANNOTATIONS:
        assert a[name] == b[name], name
    different = [name for name in a if a[name] != b[name]]
    assert different == []  # videos, JPEGs and PNGs too, across pool sizes


def test_different_seed_differs(world: Path, tmp_path: Path) -> None:
    generate_world(tmp_path / "c", VIDEOS, seed=1, workers=2, tracks="none")
    for name in ("videos.csv", "ava/annotations/ava_train_v2.2.csv"):
        assert (world / name).read_bytes() != (tmp_path / "c" / name).read_bytes()
    assert not (tmp_path / "c" / "otb").exists()


def test_reuse_regenerate_and_refuse(tmp_path: Path) -> None:
    root = tmp_path / "w"
    first = generate_world(root, 2, seed=3, frames=16, workers=1)
    assert not first.reused
    stamp = (root / "videos.csv").stat().st_mtime_ns
    again = generate_world(root, 2, seed=3, frames=16, workers=1)
    assert again.reused and again.params == first.params and again.counts == first.counts
    assert (root / "videos.csv").stat().st_mtime_ns == stamp
    other = generate_world(root, 3, seed=3, frames=16, workers=1)
    assert not other.reused and other.counts["videos"] == 3
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        generate_world(tmp_path / "foreign", 2, seed=0, frames=16, workers=1)


# ---------------------------------------------------------------- ground truth consistency


def test_ava_boxes_are_tight_boxes_of_masks(world: Path) -> None:
    rows = _ava(world / "ava/annotations/ava_train_v2.2.csv")
    rows += _ava(world / "ava/annotations/ava_val_v2.2.csv")
    by_key = {(r[0], int(r[1]), int(r[7])): [float(v) for v in r[2:6]] for r in rows}
    for video_id in {r[0] for r in rows}:
        masks = _masks(world, video_id)
        for second in range(0, (FRAMES - 1) // FPS + 1):
            label = masks[second * FPS]
            for track in range(1, int(masks.max()) + 1):
                box = by_key.get((video_id, second, track))
                if box is None:  # omitted only when (almost) fully occluded
                    assert (label == track).sum() < MIN_VISIBLE
                    continue
                assert np.allclose(np.array(box) * SIZE, _mask_box(label == track), atol=1.0)


def test_otb_matches_masks_and_ava(world: Path) -> None:
    rows = _ava(world / "ava/annotations/ava_train_v2.2.csv")
    rows += _ava(world / "ava/annotations/ava_val_v2.2.csv")
    by_key = {(r[0], int(r[1]), int(r[7])): [float(v) for v in r[2:6]] for r in rows}
    sequences = sorted((world / "otb").iterdir())
    assert sequences
    for seq in sequences:
        video_id, track = seq.name.rsplit("_obj", 1)
        # parsed the way got10k parses OTB: commas to spaces, then np.loadtxt
        text = (seq / "groundtruth_rect.txt").read_text().replace(",", " ")
        gt = np.loadtxt(text.splitlines())
        images = sorted(p.name for p in (seq / "img").iterdir())
        assert images == [f"{i:04d}.jpg" for i in range(1, FRAMES + 1)]
        assert gt.shape == (FRAMES, 4) and (gt[:, 2:] > 0).all()
        masks = _masks(world, video_id)
        for t in range(FRAMES):
            x1, y1, x2, y2 = _mask_box(masks[t] == int(track))
            assert tuple(gt[t]) == (x1 + 1, y1 + 1, x2 - x1, y2 - y1)
        for second in range(0, (FRAMES - 1) // FPS + 1):
            x, y, w, h = gt[second * FPS]
            normalised = np.array([x - 1, y - 1, x - 1 + w, y - 1 + h]) / SIZE
            ava = by_key[(video_id, second, int(track))]
            assert np.allclose(normalised * SIZE, np.array(ava) * SIZE, atol=1.0)


def test_per_frame_box_files_match_masks(world: Path) -> None:
    davis_sets = world / "davis/ImageSets/2017"
    names = (davis_sets / "val.txt").read_text().split() + (
        davis_sets / "train.txt"
    ).read_text().split()
    for video_id in names:
        masks = _masks(world, video_id)
        with open(world / "boxes" / f"{video_id}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        seen = Counter(int(r["frame_index"]) for r in rows)
        for r in rows:
            label = masks[int(r["frame_index"])] == int(r["track_id"])
            box = [float(r[k]) * SIZE for k in ("x1", "y1", "x2", "y2")]
            assert np.allclose(box, _mask_box(label), atol=0.5)
        assert set(seen) == set(range(FRAMES))


# ---------------------------------------------------------------- classes and videos


def test_classes_are_balanced() -> None:
    jobs = plan_jobs(Path("unused"), WorldParams(num_videos=500, seed=0))
    per_class = Counter(j.class_name for j in jobs)
    assert len(per_class) >= 10 and max(per_class.values()) - min(per_class.values()) <= 1
    val = Counter(j.class_name for j in jobs if j.split == "val")
    assert len(val) == len(per_class) and max(val.values()) - min(val.values()) <= 1
    assert 0.18 <= sum(val.values()) / 500 <= 0.22
    assert len({j.video_id for j in jobs}) == 500
    assert [j.class_name for j in jobs[:12]] != sorted(j.class_name for j in jobs[:12])


def test_videos_decode_and_match_frames(world: Path) -> None:
    paths = sorted((world / "videos").rglob("*.mp4"))
    assert len(paths) == VIDEOS
    for path in paths:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert stream.codec_context.name == "h264" and stream.average_rate == FPS
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert len(frames) == FRAMES and frames[0].shape == (SIZE, SIZE, 3)
        jpeg = world / "davis/JPEGImages/480p" / path.stem / "00010.jpg"
        rendered = np.asarray(Image.open(jpeg), dtype=np.float32)
        assert np.abs(frames[10].astype(np.float32) - rendered).mean() < 8.0


# ---------------------------------------------------------------- file formats


def test_ucf_split_files(world: Path) -> None:
    raw = (world / "ucfTrainTestlist/classInd.txt").read_bytes()
    assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    class_ind = dict(line.split(" ") for line in raw.decode().splitlines())
    names = list(class_ind.values())
    assert list(class_ind) == [str(i) for i in range(1, len(names) + 1)]
    folders = sorted(p.name for p in (world / "videos").iterdir())
    assert names == folders == sorted(names)  # torchvision's sorted-folder labels agree
    for line in (world / "ucfTrainTestlist/trainlist01.txt").read_text().splitlines():
        path, label = line.strip().split(" ")
        assert re.fullmatch(r"(\w+)/v_\1_g\d\d_c\d\d\.mp4", path)
        assert class_ind[label] == path.split("/")[0] and (world / "videos" / path).is_file()
    test = (world / "ucfTrainTestlist/testlist01.txt").read_text().splitlines()
    assert test and all(" " not in x and (world / "videos" / x.strip()).is_file() for x in test)


def test_kinetics_and_slowfast_lists(world: Path) -> None:
    with open(world / "kinetics/train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["label", "youtube_id", "time_start", "time_end", "split"]
    assert {r["split"] for r in rows} == {"train"}
    for r in rows:
        assert (world / "videos" / r["label"] / f"{r['youtube_id']}.mp4").is_file()
    classes = sorted(p.name for p in (world / "videos").iterdir())
    for line in (world / "slowfast/val.csv").read_text().splitlines():
        path, label = line.split(" ")
        assert classes[int(label)] == Path(path).parent.name and (world / path).is_file()


def test_ava_files(world: Path) -> None:
    folder = world / "ava/annotations"
    pbtxt = (folder / "ava_action_list_v2.2_for_activitynet_2019.pbtxt").read_text()
    label_map = {int(i): n for n, i in re.findall(r'name: "([^"]+)"\s+id: (\d+)', pbtxt)}
    assert len(label_map) == 8 and label_map[1] == "still"
    gt = _ava(folder / "ava_train_v2.2.csv")
    assert gt and all(len(r) == 8 and re.fullmatch(r"\d{4}", r[1]) for r in gt)
    for r in gt:
        x1, y1, x2, y2 = map(float, r[2:6])
        assert 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 and int(r[6]) in label_map
    detections = _ava(folder / "ava_val_predicted_boxes.csv")
    assert detections and all(len(r) == 8 and r[6] == "" for r in detections)
    assert all(0.0 < float(r[7]) <= 1.0 for r in detections)


def test_davis_layout(world: Path) -> None:
    names = (world / "davis/ImageSets/2017/val.txt").read_text().split()
    names += (world / "davis/ImageSets/2017/train.txt").read_text().split()
    assert len(names) == VIDEOS
    palette = davis_palette()
    assert palette[:15] == [0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0, 0, 0, 128]
    for name in names[:3]:
        jpegs = sorted((world / "davis/JPEGImages/480p" / name).iterdir())
        pngs = sorted((world / "davis/Annotations/480p" / name).iterdir())
        assert [p.name for p in jpegs] == [f"{i:05d}.jpg" for i in range(FRAMES)]
        assert [p.stem for p in pngs] == [p.stem for p in jpegs]
        image = Image.open(pngs[0])
        assert image.mode == "P" and image.getpalette()[:15] == palette[:15]
        ids = np.unique(np.asarray(image))
        assert ids[0] == 0 and list(ids[1:]) == list(range(1, len(ids)))  # all objects in frame 0


def test_cli_generates_a_world(world: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    assert cli.main(["data", "synth", str(out), "--videos", "12", "--seed", "0"]) == 0
    assert (out / "summary.json").is_file()
    # the tracks option only adds files: the AVA ground truth equals the tracks="all" world's
    for name in ("ava/annotations/ava_train_v2.2.csv", "videos.csv"):
        assert (out / name).read_bytes() == (world / name).read_bytes()


def test_box_files_load_as_detections(world: Path) -> None:
    video_id = (world / "davis/ImageSets/2017/val.txt").read_text().split()[0]
    boxes = sources.load_boxes(world / "boxes" / f"{video_id}.csv")
    assert sorted(boxes) == list(range(FRAMES))
    assert all(b.shape[1] == 5 and (b[:, 4] == 1.0).all() for b in boxes.values())
