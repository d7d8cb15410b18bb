import logging

import matplotlib.image

from constcl.cli import main


def test_preview_writes_a_picture(videos, tmp_path, capsys):
    out = tmp_path / "preview.png"
    code = main(
        [
            "data",
            "preview",
            str(videos["still"]),
            "--out",
            str(out),
            "--size",
            "32",
            "--frames",
            "8",
            "--regions",
            "cues",
        ]
    )
    assert code == 0 and "valid boxes" in capsys.readouterr().out
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 400


def test_preview_of_a_bad_file_fails_cleanly(videos, tmp_path, caplog):
    """Issue 23: exit 2 (an expected error, not 1) and one line naming the file; the data set's
    "skipping bad video" warning is not printed on top of it."""
    with caplog.at_level(logging.INFO):
        code = main(["data", "preview", str(videos["corrupt"]), "--out", str(tmp_path / "x.png")])
    assert code == 2
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert str(videos["corrupt"]) in lines[0] and "unreadable" in lines[0]
    assert not (tmp_path / "x.png").exists()
