"""`constcl convert tf` on what a new user meets: a half-downloaded or junk archive, the mode of
the converted file, and a folder with several checkpoints (issue 24; issue 23 point 6)."""

from __future__ import annotations

import os
import shutil
import stat
import tarfile
from pathlib import Path

import numpy as np
import pytest

from constcl.cli import main

FIXTURE = Path(__file__).parents[1] / "fixtures" / "tf"


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("archive") / "r3d_tiny.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(FIXTURE, arcname="r3d_tiny")
    return path


@pytest.mark.parametrize("kind", ["truncated", "junk", "empty", "truncated_tar"])
def test_broken_archive_is_one_line_naming_the_file(archive: Path, tmp_path: Path, kind: str,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    data = archive.read_bytes()
    if kind == "truncated_tar":  # an uncompressed .tar cut in the middle of a member
        bad = tmp_path / "cut.tar"
        with tarfile.open(archive) as src, tarfile.open(tmp_path / "full.tar", "w") as dst:
            for member in src.getmembers():
                dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        bad.write_bytes((tmp_path / "full.tar").read_bytes()[:200_000])
    else:
        bad = tmp_path / f"{kind}.tar.gz"
        bad.write_bytes({"truncated": data[: len(data) // 2],
                         "junk": np.random.default_rng(0).bytes(5000), "empty": b""}[kind])
    out = tmp_path / "out" / "backbone.safetensors"
    assert main(["convert", "tf", str(bad), str(out)]) == 2
    errors = _errors(caplog)
    assert len(errors) == 1 and str(bad) in errors[0] and "\n" not in errors[0]
    assert "archive" in errors[0]
    assert not out.exists()


def test_converted_file_respects_the_umask(archive: Path, tmp_path: Path) -> None:
    out = tmp_path / "backbone.safetensors"
    old = os.umask(0o022)
    try:
        assert main(["convert", "tf", str(archive), str(out), "--bn-epsilon", "1e-3"]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


def test_summary_names_the_checkpoint_used(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    for step in (5, 40):
        for suffix in (".index", ".data-00000-of-00001"):
            shutil.copy(FIXTURE / f"ckpt-1{suffix}", folder / f"ckpt-{step}{suffix}")
    out = tmp_path / "backbone.safetensors"
    assert main(["convert", "tf", str(folder), str(out), "--bn-epsilon", "1e-3"]) == 0
    printed = capsys.readouterr().out
    assert "ckpt-40" in printed and "newest of 2" in printed and "ckpt-5" in printed
    assert main(["convert", "tf", str(FIXTURE / "ckpt-1"), str(out), "--bn-epsilon",
                 "1e-3"]) == 0
    assert "from ckpt-1" in capsys.readouterr().out
