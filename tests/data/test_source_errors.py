"""Data-source files that cannot be used name the file (and line); folder scans follow symbolic
links to folders and report links that loop."""

from __future__ import annotations

import logging
import os

import pytest

from constcl.data.check import check_source
from constcl.data.sources import list_videos, load_boxes, resolve_source, walk_files
from constcl.errors import DataFileError

KINETICS_HEADER = "label,youtube_id,time_start,time_end,split\n"


def test_kinetics_bad_time_start_names_the_row(tmp_path):
    csv = tmp_path / "train.csv"
    csv.write_text(KINETICS_HEADER + "run,aaa,10,20,train\n\nrun,bbb,abc,30,train\n")
    with pytest.raises(DataFileError) as err:
        resolve_source(csv)
    assert str(err.value).startswith(f"{csv}:4: ")
    assert "time_start 'abc'" in str(err.value)
    assert err.value.line == 4 and err.value.path == csv


def test_non_utf8_csv_names_the_file(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_bytes(b"path,label\nvid\xe9o.mp4,a\n")
    with pytest.raises(DataFileError, match="not UTF-8") as err:
        resolve_source(csv)
    assert str(err.value).startswith(f"{csv}:2: ")


def test_header_only_csv_says_it_has_no_rows(tmp_path):
    for header in ("path,label\n", KINETICS_HEADER):
        csv = tmp_path / "list.csv"
        csv.write_text(header)
        with pytest.raises(DataFileError, match="no rows") as err:
            resolve_source(csv)
        assert "needs a 'path'" not in str(err.value)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataFileError, match="empty CSV"):
        resolve_source(tmp_path / "empty.csv")


def test_csv_without_a_path_column_lists_its_header(tmp_path):
    csv = tmp_path / "list.csv"
    csv.write_text("file,label\na.mp4,x\n")
    with pytest.raises(ValueError, match=r"list.csv:1: .*its header has file,label"):
        resolve_source(csv)


def test_non_utf8_txt_list_and_bad_box_file(tmp_path):
    txt = tmp_path / "list.txt"
    txt.write_bytes(b"a.mp4 1\n\xff\xfe.mp4 2\n")
    with pytest.raises(DataFileError, match=r"list.txt:2: not UTF-8"):
        resolve_source(txt)
    boxes = tmp_path / "v.boxes.csv"
    boxes.write_text("frame_index,x1,y1,x2,y2,score\n0,0.1,0.1,0.5,0.5,0.9\n1,0.1,oops,0.5,0.5,1\n")
    with pytest.raises(DataFileError, match=r"v.boxes.csv:3: expected numbers"):
        load_boxes(boxes)


def _video(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not really a video")
    return path


def test_folder_scan_follows_linked_folders_and_reports_loops(tmp_path, caplog):
    root = tmp_path / "videos"
    _video(root / "archery" / "a1.mp4")
    _video(tmp_path / "elsewhere" / "b1.mp4")
    os.symlink(tmp_path / "elsewhere", root / "bowling")  # a linked class folder
    os.symlink(root, root / "archery" / "up")  # loops to a folder above it
    os.symlink(root / "self.mp4", root / "self.mp4")  # points to itself
    os.symlink(tmp_path / "elsewhere", root / "archery" / "again")  # a second link: scanned once
    skipped: list[tuple[str, str]] = []
    with caplog.at_level(logging.WARNING):
        files = walk_files(root, skipped)
    assert files == [root / "archery" / "a1.mp4", root / "bowling" / "b1.mp4"]
    reasons = dict(skipped)
    assert set(reasons) == {str(root / "archery" / "up"), str(root / "self.mp4")}
    assert all("symbolic link loop" in r for r in reasons.values())
    assert "symbolic link loop" in caplog.text

    items = list_videos(root)
    assert [(i.path.name, i.label_name, i.label) for i in items] == [
        ("a1.mp4", "archery", 0), ("b1.mp4", "bowling", 1)]

    report = check_source(str(root), workers=1)
    bad = {b["path"]: b["reason"] for b in report["bad"]}
    assert "symbolic link loop" in bad[str(root / "self.mp4")]
    assert "symbolic link loop" in bad[str(root / "archery" / "up")]
    assert len(report["files"]) == 4  # two (fake) videos checked + two loops


def test_check_of_a_folder_holding_only_a_dangling_video_link(tmp_path):
    os.symlink(tmp_path / "gone.mp4", tmp_path / "v.mp4")
    report = check_source(str(tmp_path), workers=1)
    assert report["ok"] == 0 and "dangling symbolic link" in report["bad"][0]["reason"]
