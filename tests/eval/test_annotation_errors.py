"""Annotation files of the evaluation tasks: errors name the file and line, AVA boxes outside
the frame are fixed and counted, names that would build output paths are plain names."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from constcl.errors import DataFileError
from constcl.eval.classify.data import load_splits
from constcl.eval.detect import data as ava
from constcl.eval.metrics.ava_map import read_ava_exclusions, read_ava_groundtruth_csv
from constcl.eval.outputs import safe_name
from constcl.eval.propagate.data import load_sequences


def _ucf(tmp_path, class_ind="1 Archery\n2 Bowling\n", train="Archery/v_a.avi 1\n",
         test="Bowling/v_b.avi\n"):
    splits = tmp_path / "ucfTrainTestlist"
    splits.mkdir(exist_ok=True)
    (splits / "classInd.txt").write_text(class_ind)
    (splits / "trainlist01.txt").write_text(train)
    (splits / "testlist01.txt").write_text(test)
    videos = tmp_path / "videos"
    for name in ("v_a.avi", "v_b.avi"):
        (videos / name).parent.mkdir(exist_ok=True)
        (videos / name).write_bytes(b"")
    return splits


def test_ucf_lists_load_when_valid(tmp_path):
    out = load_splits(_ucf(tmp_path).parent)
    assert out.classes == ["Archery", "Bowling"]
    assert [(i.path.name, i.label) for i in out.train + out.test] == [("v_a.avi", 0),
                                                                     ("v_b.avi", 1)]


@pytest.mark.parametrize("files, where, text", [
    ({"class_ind": "1 Archery\n\n2\n"}, "classInd.txt:3", "expected '<class id> <class name>'"),
    ({"class_ind": "1 Archery\nx Bowling\n"}, "classInd.txt:2", "expected '<class id>"),
    ({"class_ind": "1 Archery\n1 Bowling\n"}, "classInd.txt:2", "listed twice"),
    ({"train": "Archery/v_a.avi 1\nBowling/v_b.avi 9\n"}, "trainlist01.txt:2",
     "class id '9' is not one of 1..2"),
    ({"test": "Bowling/v_b.avi\nCycling/v_c.avi\n"}, "testlist01.txt:2",
     "class folder 'Cycling'"),
])
def test_ucf_list_errors_name_file_and_line(tmp_path, files, where, text):
    splits = _ucf(tmp_path, **files)
    with pytest.raises(DataFileError) as err:
        load_splits(splits.parent)
    assert str(err.value).startswith(f"{splits}/{where}: ") and text in str(err.value)


def test_hmdb_line_without_a_tag(tmp_path):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    (splits / "run_test_split1.txt").write_text("a.avi 1\nb.avi\n")
    with pytest.raises(DataFileError, match=r"run_test_split1.txt:2: expected '<video file>"):
        load_splits(tmp_path, videos=tmp_path)


def test_kinetics_bad_time_start_names_the_row(tmp_path):
    kin = tmp_path / "kinetics"
    kin.mkdir()
    header = "label,youtube_id,time_start,time_end,split\n"
    (kin / "train.csv").write_text(header + "run,aaa,1,11,train\nrun,bbb,x,11,train\n")
    (kin / "validate.csv").write_text(header + "run,ccc,1,11,val\n")
    with pytest.raises(DataFileError, match=r"train.csv:3: time_start 'x'"):
        load_splits(tmp_path, videos=tmp_path)
    (kin / "train.csv").write_text(header)
    with pytest.raises(DataFileError, match=r"train.csv: CSV has a header .* but no rows"):
        load_splits(tmp_path, videos=tmp_path)


def test_ava_csv_errors_name_file_and_real_line(tmp_path):
    csv = tmp_path / "ava_val_v2.2.csv"
    csv.write_text("v,902,0.1,0.1,0.5,0.5,1,0\n\nv,9o3,0.1,0.1,0.5,0.5,1,0\n")
    with pytest.raises(DataFileError, match=r"ava_val_v2.2.csv:3: expected video_id, integer"):
        read_ava_groundtruth_csv(csv)
    csv.write_text("v,902,0.1,0.1\n")
    with pytest.raises(DataFileError, match=r"ava_val_v2.2.csv:1: expected 7 or 8 columns"):
        read_ava_groundtruth_csv(csv)
    csv.write_bytes(b"v\xe9,902,0.1,0.1,0.5,0.5,1,0\n")
    with pytest.raises(DataFileError, match=r"ava_val_v2.2.csv:1: not UTF-8"):
        read_ava_groundtruth_csv(csv)
    excl = tmp_path / "excluded.csv"
    excl.write_text("v,902\nv\n")
    with pytest.raises(DataFileError, match=r"excluded.csv:2: expected 2 columns"):
        read_ava_exclusions(excl)
    det = tmp_path / "det.csv"
    det.write_text("v,902,0.1,0.1,0.5,0.5,,0.9\nv,902,0.1,0.1,0.5,0.5,,high\n")
    with pytest.raises(DataFileError, match=r"det.csv:2: expected video_id"):
        ava.detection_key_frames(det, 0.5, 3)


def test_ava_boxes_outside_the_frame_are_clipped_or_dropped(tmp_path, caplog):
    valid = [("v", 902, 0.1, 0.2, 0.5, 0.6, 1, 0), ("v", 902, 0.0, 0.0, 1.0, 1.0, 2, 1)]
    fixes = ava.BoxFixes()
    assert ava.fix_boxes(valid, "gt.csv", fixes) == valid and fixes.as_dict() == {
        "clipped": 0, "dropped": 0}
    rows = valid + [("v", 903, -0.1, 0.2, 0.5, 1.2, 1, 2),  # clipped
                    ("v", 903, 0.6, 0.2, 0.4, 0.6, 1, 3),  # inverted x
                    ("v", 903, 1.1, 0.2, 1.5, 0.6, 1, 4),  # entirely right of the frame
                    ("v", 903, float("nan"), 0.2, 0.5, 0.6, 1, 5)]
    with caplog.at_level(logging.WARNING):
        fixed = ava.fix_boxes(rows, "gt.csv", fixes)
    assert fixed == valid + [("v", 903, 0.0, 0.2, 0.5, 1.0, 1, 2)]
    assert fixes.as_dict() == {"clipped": 1, "dropped": 3}
    assert "gt.csv: clipped 1 box(es)" in caplog.text and "dropped 3" in caplog.text

    gt = tmp_path / "gt.csv"
    gt.write_text("v,902,0.1,0.2,0.5,0.6,1,0\nv,903,0.2,0.2,1.3,0.6,1,1\nv,903,0.9,0,0.1,1,1,2\n")
    fixes = ava.BoxFixes()
    read = ava.read_groundtruth(gt, fixes)
    assert [r[2:6] for r in read] == [(0.1, 0.2, 0.5, 0.6), (0.2, 0.2, 1.0, 0.6)]
    det = tmp_path / "det.csv"
    det.write_text("v,902,0.1,0.2,0.5,0.6,,0.9\nv,902,-0.2,0.2,0.5,0.6,,0.95\n"
                   "v,902,0.5,0.7,0.6,0.2,,0.99\n")
    frames = ava.detection_key_frames(det, 0.5, 3, fixes)
    np.testing.assert_allclose(frames.boxes[0], [[0.1, 0.2, 0.5, 0.6], [0.0, 0.2, 0.5, 0.6]])
    assert fixes.as_dict() == {"clipped": 2, "dropped": 2}


def _davis(tmp_path, names: str):
    root = tmp_path / "davis"
    for sub in ("JPEGImages", "Annotations"):
        (root / sub / "480p" / "bear").mkdir(parents=True)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text(names)
    return root


@pytest.mark.parametrize("name", ["../../etc", "bear/../../x", "..", "a\\b"])
def test_davis_sequence_names_must_be_plain_names(tmp_path, name):
    root = _davis(tmp_path, f"bear\n{name}\n")
    with pytest.raises(DataFileError) as err:
        load_sequences(root)
    assert str(err.value).startswith(f"{root / 'ImageSets' / '2017' / 'val.txt'}:2: ")
    assert "not a plain file name" in str(err.value)


def test_safe_name_accepts_plain_names():
    assert safe_name("bear") == "bear" and safe_name("x..y") == "x..y"
    assert safe_name("Jogging.1") == "Jogging.1"
    with pytest.raises(ValueError, match="not a plain file name"):
        safe_name("a/b")
