from pathlib import Path

import numpy as np
import pytest

from constcl.data.sources import find_box_file, list_videos, load_boxes, resolve_source


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


def test_folder_tree_with_class_subfolders(tmp_path):
    for name in ["walk/a.mp4", "run/b.mkv", "run/c.avi", "jump/sub/d.webm", "run/notes.txt"]:
        _touch(tmp_path / name)
    items = list_videos(tmp_path)
    got = {(p.path.name, p.label, p.label_name) for p in items}
    assert got == {
        ("a.mp4", 2, "walk"),
        ("b.mkv", 1, "run"),
        ("c.avi", 1, "run"),
        ("d.webm", 0, "jump"),
    }


def test_flat_folder_has_no_labels(tmp_path):
    _touch(tmp_path / "x.mp4")
    _touch(tmp_path / "y.MP4")
    assert [(i.path.name, i.label) for i in list_videos(tmp_path)] == [
        ("x.mp4", None),
        ("y.MP4", None),
    ]


def test_kinetics_csv_resolves_ids_and_reports_missing(tmp_path):
    _touch(tmp_path / "videos/train/abseiling/aaa_000010_000020.mp4")
    _touch(tmp_path / "videos/bbb.mp4")
    csv = tmp_path / "train.csv"
    csv.write_text(
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaa,10,20,train\n"
        "zumba,bbb,0,10,train\n"
        "zumba,ccc,5,15,train\n"
    )
    items, missing = resolve_source(csv, root=tmp_path / "videos")
    assert [(i.path.name, i.label, i.label_name) for i in items] == [
        ("aaa_000010_000020.mp4", 0, "abseiling"),
        ("bbb.mp4", 1, "zumba"),
    ]
    assert missing == ["ccc_000005_000015"]
    assert len(list_videos(csv, root=tmp_path / "videos")) == 2


def test_path_label_csv_and_txt_list(tmp_path):
    _touch(tmp_path / "v/a.mp4")
    _touch(tmp_path / "v/b.mp4")
    (tmp_path / "list.csv").write_text("path,label\nv/a.mp4,dog\nv/b.mp4,cat\n")
    assert [(i.path.name, i.label) for i in list_videos(tmp_path / "list.csv")] == [
        ("a.mp4", 1),
        ("b.mp4", 0),
    ]
    (tmp_path / "nums.csv").write_text("path,label,class_name\nv/a.mp4,3,run\nv/b.mp4,7,\n")
    nums = list_videos(tmp_path / "nums.csv")
    assert [(i.label, i.label_name) for i in nums] == [(3, "run"), (7, "7")]
    (tmp_path / "list.txt").write_text("v/a.mp4 4\n\n# comment\nv/b.mp4\nv/missing.mp4\n")
    items, missing = resolve_source(tmp_path / "list.txt")
    assert [(i.path.name, i.label) for i in items] == [("a.mp4", 4), ("b.mp4", None)]
    assert missing == [str(tmp_path / "v/missing.mp4")]


def test_bad_sources_raise(tmp_path):
    with pytest.raises(FileNotFoundError):
        resolve_source(tmp_path / "nope")
    (tmp_path / "x.csv").write_text("file,label\na,b\n")
    with pytest.raises(ValueError, match="path"):
        resolve_source(tmp_path / "x.csv")


def test_box_files_next_to_video_or_in_a_folder(tmp_path):
    video = _touch(tmp_path / "v/clip1.mp4")
    assert find_box_file(video) is None
    side = tmp_path / "v/clip1.boxes.csv"
    side.write_text(
        "frame_index,x1,y1,x2,y2,score\n0,0.1,0.2,0.3,0.4,0.9\n0,0,0,1,1,0.5\n25,0.5,0.5,0.6,0.7,1\n"
    )
    assert find_box_file(video) == side
    (tmp_path / "boxes").mkdir()
    other = tmp_path / "boxes/clip1.csv"
    other.write_text("frame_index,x1,y1,x2,y2,score\n")
    assert find_box_file(video, tmp_path / "boxes") == other
    assert list_videos(tmp_path / "v")[0].boxes_path == side
    boxes = load_boxes(side)
    assert sorted(boxes) == [0, 25]
    np.testing.assert_allclose(boxes[0], [[0.1, 0.2, 0.3, 0.4, 0.9], [0, 0, 1, 1, 0.5]])
    assert load_boxes(other) == {}
