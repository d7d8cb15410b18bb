"""Issue 23, cases 3-5 and part of 7: `data prepare` when the *output* fails, long names,
nested folders, SIGTERM.

Faults are real where the test runs as root allows it: a file-size limit (``RLIMIT_FSIZE`` in a
subprocess; Python ignores SIGXFSZ, so the write fails with EFBIG), a file where an output
folder must go (root ignores permission bits, so ``chmod`` cannot make a folder read-only),
SIGTERM to a running command; disk full / quota / read-only / permission errors are raised by
a stand-in transcoder, since they cannot be produced here without privileges.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from constcl.cli import main
from constcl.data import prepare as prepare_module
from constcl.data.encode import write_video
from constcl.data.prepare import PrepareSettings, prepare
from constcl.data.sources import list_videos
from constcl.errors import ConstclError, OutputError
from constcl.runlock import LOCK_NAME

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def noise_video(path: Path, frames: int = 20, seed: int = 0) -> Path:
    """Random pixels: the transcoded copy is tens of kB, far more than any JSON record."""
    pixels = np.random.default_rng(seed).integers(0, 256, (frames, 64, 64, 3), dtype=np.uint8)
    return write_video(path, pixels, fps=25, gop_size=250)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fault_src")
    for i, cls in enumerate(("cats", "cats", "dogs")):
        (root / cls).mkdir(exist_ok=True)
        noise_video(root / cls / f"v{i}.mp4", seed=i)
    return root


def constcl(*args: str, fsize: int | None = None, timeout: float = 120
            ) -> subprocess.CompletedProcess:
    def limit() -> None:
        if fsize is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run([sys.executable, "-m", "constcl", *args], env=ENV, text=True,
                          capture_output=True, preexec_fn=limit, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("constcl: error:")]


def test_file_size_limit_blames_the_output_and_a_rerun_completes(source, tmp_path):
    """The issue's case: under a file-size limit every video was recorded as "transcoding
    failed" and never retried; after the limit was lifted the rerun exited 0 with videos
    missing."""
    out = tmp_path / "out"
    args = ("data", "prepare", str(source), str(out), "--workers", "2", "--no-progress")
    first = constcl(*args, fsize=8000)
    assert first.returncode == 2, first.stderr[-2000:]
    lines = error_lines(first.stderr)
    assert len(lines) == 1 and "Traceback" not in first.stderr, first.stderr[-2000:]
    assert f"cannot write {out}/videos/" in lines[0] and "File too large" in lines[0]
    assert "nothing was recorded against" in lines[0] and ".partial" not in lines[0]
    assert not list((out / ".prepare" / "records").glob("*.json"))
    assert not list(out.rglob("*.partial")) and not (out / LOCK_NAME).exists()
    second = constcl(*args)
    assert second.returncode == 0, second.stderr[-2000:]
    assert "3 of 3 videos ready" in second.stdout and ", 0 bad" in second.stdout
    assert len(list_videos(out / "manifest.csv")) == 3


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES])
def test_output_errors_record_nothing_against_the_source(source, tmp_path, monkeypatch, code):
    out = tmp_path / "out"
    real = prepare_module.transcode
    calls = []

    def failing_second(src, dst, enc):
        calls.append(src)
        if len(calls) == 2:  # e.g. the disk fills up while writing the second video
            raise OSError(code, os.strerror(code), str(dst))
        return real(src, dst, enc)

    monkeypatch.setattr(prepare_module, "transcode", failing_second)
    settings = PrepareSettings(str(source), str(out), progress=False)
    with pytest.raises(OutputError) as err:
        prepare(settings)
    message = str(err.value)
    victim = Path(calls[1])
    assert f"videos/{victim.parent.name}/{victim.stem}.mp4" in message
    assert os.strerror(code) in message and f"nothing was recorded against {victim}" in message
    records = [json.loads(r.read_text()) for r in (out / ".prepare" / "records").glob("*.json")]
    assert [r["job"]["source"] for r in records] == [calls[0]]  # only the finished one
    monkeypatch.setattr(prepare_module, "transcode", real)  # the fault is fixed
    again = prepare(settings)
    assert (again.written, again.reused, again.bad) == (2, 1, 0)


def test_a_file_where_an_output_folder_goes(source, tmp_path, caplog):
    """Root ignores permission bits; a file in the way fails for anyone."""
    out = tmp_path / "out"
    (out / "videos").mkdir(parents=True)
    (out / "videos" / "cats").write_text("in the way")
    args = ["data", "prepare", str(source), str(out), "--workers", "1", "--no-progress"]
    assert main(args) == 2
    lines = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(lines) == 1 and f"cannot write {out}/videos/cats/" in lines[0], lines
    assert not list((out / ".prepare" / "records").glob("*.json"))
    (out / "videos" / "cats").unlink()
    assert main(args) == 0
    assert len(list_videos(out / "manifest.csv")) == 3


def test_long_legal_names_are_prepared(tmp_path):
    """A 255-byte file name is legal; its temporary ``<name>.<pid>.partial`` was not, and the
    whole run stopped naming the temporary file."""
    src = tmp_path / "src"
    src.mkdir()
    long_ascii = "a" * 251 + ".mp4"
    long_utf8 = "é" * 125 + "b.mkv"  # 255 bytes; its .mp4 output would be 256
    noise_video(src / long_ascii)
    noise_video(src / long_utf8, seed=1)
    result = prepare(PrepareSettings(str(src), str(tmp_path / "out"), progress=False))
    assert (result.written, result.bad) == (2, 0)
    names = [p.name for p in (tmp_path / "out" / "videos").iterdir()]
    assert len(names) == 2 and all(len(n.encode()) <= 255 for n in names)
    assert long_ascii in names


def test_fit_name_cuts_at_a_character_boundary():
    name = prepare_module.fit_name("é" * 200, ".mp4", "abcd1234")
    assert len(name.encode()) <= 255 and name.endswith("-abcd1234.mp4")
    assert name.encode().decode() == name
    assert prepare_module.fit_name("short", ".mp4", "x") == "short.mp4"


@pytest.mark.parametrize("where", ["same", "out_inside_source", "source_inside_out"])
def test_nested_source_and_output_are_refused_before_any_work(source, tmp_path, where,
                                                              caplog):
    """The issue's case: OUT inside SOURCE was accepted, and the documented rerun took in its
    own output (a new class named after the output folder)."""
    if where == "same":
        src, out = tmp_path / "src", tmp_path / "src"
        src.mkdir()
        noise_video(src / "v.mp4")
    elif where == "out_inside_source":
        src, out = source, source / "prepared"
    else:
        out = tmp_path / "out"
        (out / "raw").mkdir(parents=True)
        noise_video(out / "raw" / "v.mp4")
        src = out / "raw"
    before = sorted(p.relative_to(tmp_path.parent) for p in tmp_path.parent.rglob("*")) \
        if where != "out_inside_source" else sorted(source.rglob("*"))
    assert main(["data", "prepare", str(src), str(out), "--no-progress"]) == 2
    lines = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
    assert len(lines) == 1 and str(src) in lines[0], lines
    after = sorted(p.relative_to(tmp_path.parent) for p in tmp_path.parent.rglob("*")) \
        if where != "out_inside_source" else sorted(source.rglob("*"))
    assert after == before  # nothing was written
    with pytest.raises(ConstclError):
        prepare_module.check_nesting(src, out)


def _wait_for(predicate, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline and not predicate():
        time.sleep(0.02)
    assert predicate(), "the command did not get that far"


def _group_gone(pgid: int, seconds: float = 10) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("command", ["prepare", "synth"])
def test_sigterm_stops_cleanly_with_one_line(tmp_path, source, command):
    """SIGTERM to the command (as systemd or a batch system sends it): one line, exit 143, no
    worker traceback (synth's spawn pool printed BrokenPipeError tracebacks), no orphaned
    workers (prepare's pool workers kept running), the lock released; a rerun finishes."""
    out = tmp_path / "out"
    if command == "prepare":
        src = tmp_path / "many"
        src.mkdir()
        for i in range(60):
            os.link(source / "cats" / "v0.mp4", src / f"v{i:03d}.mp4")
        args = ["data", "prepare", str(src), str(out), "--workers", "2", "--no-progress"]
        started = lambda: len(list(out.glob(".prepare/records/*.json"))) >= 2  # noqa: E731
    else:
        args = ["data", "synth", str(out), "--videos", "80", "--size", "64", "--frames", "16",
                "--workers", "2", "--tracks", "none"]
        started = lambda: len(list(out.glob("videos/*/*.mp4"))) >= 4  # noqa: E731
    proc = subprocess.Popen([sys.executable, "-m", "constcl", *args], env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        _wait_for(started)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
        assert "Traceback" not in stderr and "leaked" not in stderr, stderr[-3000:]
        assert error_lines(stderr) == [line for line in stderr.splitlines() if line.strip()
                                       and "INFO" not in line]
        assert len(error_lines(stderr)) == 1 and "SIGTERM" in error_lines(stderr)[0]
        assert _group_gone(proc.pid), "worker processes outlived the command"
        assert not (out / LOCK_NAME).exists()
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    rerun = subprocess.run([sys.executable, "-m", "constcl", *args], env=ENV, text=True,
                           capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG])
def test_shard_write_error_is_one_line_and_keeps_the_videos(source, tmp_path, monkeypatch,
                                                             code):
    """Packing shards fails mid-way (the disk fills up while the second tar is written): one
    error naming the shard, the prepared videos stay, and the rerun packs every shard."""
    from constcl.data import shards as shards_module

    out = tmp_path / "out"
    real = shards_module._write_tar
    calls = []

    def failing_second(path, out_dir, rows):
        calls.append(path)
        if len(calls) == 2:
            with open(path.with_name(path.name + ".partial"), "wb") as f:
                f.write(b"half a tar")
            raise OSError(code, os.strerror(code))  # as a failed write(): no file name
        return real(path, out_dir, rows)

    monkeypatch.setattr(shards_module, "_write_tar", failing_second)
    settings = PrepareSettings(str(source), str(out), progress=False, shards=3)
    with pytest.raises(OutputError) as err:
        prepare(settings)
    message = str(err.value)
    assert f"cannot write {out / 'shards'}" in message and os.strerror(code) in message
    assert "run the same command again" in message
    assert len(list((out / "videos").rglob("*.mp4"))) == 3  # nothing lost
    monkeypatch.setattr(shards_module, "_write_tar", real)
    again = prepare(settings)
    assert again.bad == 0
    index = json.loads((out / "shards" / "index.json").read_text())
    assert index["samples"] == 3 and len(index["shards"]) == 3
    assert not list((out / "shards").glob("*.partial"))
    assert not (out / "videos").exists()
