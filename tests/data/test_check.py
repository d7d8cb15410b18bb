import json

from constcl.cli import main


def test_data_check_reports_bad_files(videos, capsys):
    folder = videos["levels"].parent
    assert main(["data", "check", str(folder), "--json", "--workers", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    bad = {b["path"]: b["reason"] for b in report["bad"]}
    names = ["corrupt", "truncated", "truncated_mkv", "audio"]
    assert set(bad) == {str(videos[n]) for n in names}
    assert "truncated" in bad[str(videos["truncated_mkv"])]
    assert "no video stream" in bad[str(videos["audio"])]
    assert report["ok"] == len(report["files"]) - 4 == 5
    levels = next(f for f in report["files"] if f["path"] == str(videos["levels"]))
    assert (levels["fps"], levels["width"], levels["height"], levels["duration"]) == (
        25.0,
        64,
        64,
        1.92,
    )


def test_data_check_csv_reports_missing_files(videos, tmp_path, capsys):
    listing = tmp_path / "list.csv"
    listing.write_text(f"path,label\n{videos['levels']},a\n{tmp_path / 'gone.mp4'},b\n")
    assert main(["data", "check", str(listing), "--json", "--workers", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] == 1
    assert report["bad"] == [{"path": str(tmp_path / "gone.mp4"), "reason": "missing file"}]


def test_data_check_text_output_and_invalid_path(videos, tmp_path, capsys):
    assert main(["data", "check", str(videos["levels"]), "--workers", "1"]) == 0
    assert "1 ok, 0 bad" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "nowhere")]) == 2
