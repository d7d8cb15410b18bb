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


def test_preview_of_a_bad_file_fails_cleanly(videos, tmp_path, capsys):
    assert main(["data", "preview", str(videos["corrupt"]), "--out", str(tmp_path / "x.png")]) == 1
    assert "unreadable" in capsys.readouterr().err
