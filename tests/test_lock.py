"""Issue 23, case 2: one process per output folder (``constcl.runlock``).

A second process is refused with one line naming the holder; the lock of a process that died
on this host is taken over with a warning; a lock from another host is never taken over; the
library functions behind pretrain, bench, data prepare, data synth and eval ``--out`` take it
before they write anything.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from constcl.runlock import LOCK_NAME, FolderLocked, read_holder, run_lock

HOLD = textwrap.dedent("""
    import sys
    from constcl.runlock import run_lock
    with run_lock(sys.argv[1], "holder-under-test"):
        print("locked", flush=True)
        sys.stdin.readline()
""")


class Holder:
    """Another process holding ``folder``'s lock until :meth:`release` (or a kill)."""

    def __init__(self, folder: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLD, str(folder)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "locked"

    def release(self) -> None:
        self.proc.communicate("\n", timeout=30)
        assert self.proc.returncode == 0

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)


@pytest.fixture
def holder(tmp_path):
    h = Holder(tmp_path / "out")
    yield h
    if h.proc.poll() is None:
        h.release()


def test_second_process_is_refused_with_the_holder(holder, tmp_path):
    with pytest.raises(FolderLocked) as err:
        with run_lock(tmp_path / "out", "second"):
            pass
    message = str(err.value)
    assert "\n" not in message
    assert f"PID {holder.proc.pid}" in message and socket.gethostname() in message
    assert "holder-under-test" in message and "started 20" in message
    holder.release()
    assert not (tmp_path / "out" / LOCK_NAME).exists()  # released: the file is gone
    with run_lock(tmp_path / "out", "second"):  # and the folder is free again
        assert read_holder(tmp_path / "out").pid == os.getpid()


def test_lock_of_a_killed_process_is_taken_over_with_a_warning(holder, tmp_path, caplog):
    holder.kill()  # SIGKILL: no clean-up, the lock file stays behind
    lock = tmp_path / "out" / LOCK_NAME
    assert json.loads(lock.read_text())["pid"] == holder.proc.pid
    with caplog.at_level(logging.WARNING, logger="constcl.runlock"):
        with run_lock(tmp_path / "out", "after the kill"):
            assert read_holder(tmp_path / "out").command == "after the kill"
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "stale lock" in warnings[0]
    assert f"PID {holder.proc.pid}" in warnings[0]


def _write_record(folder: Path, **changes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {"host": socket.gethostname(), "pid": os.getpid(), "started": "2026-01-01T00:00:00",
              "command": "old run", "boot_id": "", "process_start": -1, **changes}
    (folder / LOCK_NAME).write_text(json.dumps(record))


def test_stale_record_of_a_dead_pid_on_this_host_is_taken_over(tmp_path, caplog):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    _write_record(tmp_path / "out", pid=int(dead.stdout))
    with caplog.at_level(logging.WARNING, logger="constcl.runlock"):
        with run_lock(tmp_path / "out"):
            pass
    assert any("stale lock" in r.getMessage() for r in caplog.records)


def test_a_reused_pid_is_recognised_by_its_start_time(tmp_path, caplog):
    """The PID is alive (this very process) but was started at another time: stale."""
    _write_record(tmp_path / "out", pid=os.getpid(), process_start=1)
    with caplog.at_level(logging.WARNING, logger="constcl.runlock"):
        with run_lock(tmp_path / "out"):
            pass
    assert any("stale lock" in r.getMessage() for r in caplog.records)


def test_a_lock_from_another_host_is_never_taken_over(tmp_path):
    _write_record(tmp_path / "out", host="other-node-17", pid=1)
    with pytest.raises(FolderLocked) as err:
        with run_lock(tmp_path / "out"):
            pass
    message = str(err.value)
    assert "other-node-17" in message and "another host" in message
    assert f"remove {tmp_path / 'out' / LOCK_NAME} by hand" in message
    assert (tmp_path / "out" / LOCK_NAME).exists()  # left alone


def test_reentrant_in_one_process_and_created_folder_removed_when_empty(tmp_path):
    out = tmp_path / "new"
    with run_lock(out, "outer"):
        with run_lock(out, "inner"):
            assert read_holder(out).command == "outer"
        assert (out / LOCK_NAME).exists()  # still held by the outer block
    assert not out.exists()  # created by the lock and left empty: removed


# --------------------------------------------------------------------------- commands


def test_eval_out_held_by_another_process_is_refused_before_writing(tmp_path, caplog):
    from constcl.cli import main

    out = tmp_path / "out"
    held = Holder(out)
    try:
        caplog.clear()
        code = main(["eval", "classify", "--checkpoint", "random", "--backbone", "r3d_tiny",
                     "--data", str(tmp_path / "nodata"), "--out", str(out)])
        errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
        assert code == 2 and len(errors) == 1, errors
        assert f"PID {held.proc.pid}" in errors[0] and "in use by" in errors[0]
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
    finally:
        held.release()


@pytest.mark.parametrize("call", ["prepare", "synth", "pretrain", "bench"])
def test_every_writer_takes_the_lock_first(call, tmp_path, monkeypatch):
    """The library functions behind the commands refuse a held folder before any work."""
    out = tmp_path / "out"
    held = Holder(out)
    try:
        with pytest.raises(FolderLocked):
            if call == "prepare":
                from constcl.data.prepare import PrepareSettings, prepare

                src = tmp_path / "src"
                src.mkdir()
                (src / "a.mp4").write_bytes(b"not a video")
                prepare(PrepareSettings(str(src), str(out), progress=False))
            elif call == "synth":
                from constcl.data.synth import generate_world

                generate_world(out, num_videos=2, seed=0, size=32, frames=8, workers=1,
                               tracks="none")
            elif call == "pretrain":
                from constcl.config import load_config
                from constcl.engine.pretrain import pretrain

                cfg = load_config(None, [f"train.out_dir={tmp_path}", "train.run_name=out",
                                         "train.device=cpu"])
                pretrain(cfg)
            else:
                from constcl.benchmark import Budget, run_bench

                monkeypatch.setattr("constcl.benchmark.generate_world",
                                    lambda *a, **k: pytest.fail("worked on a locked folder"))
                run_bench(Budget(), out)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        held.release()


def test_two_pretrain_commands_in_one_folder(tmp_path, caplog):
    """The issue's case: a second `constcl pretrain` into a run folder in use stops at once."""
    from constcl.cli import main

    held = Holder(tmp_path / "run")
    try:
        caplog.clear()
        code = main(["pretrain", f"train.out_dir={tmp_path}", "train.run_name=run",
                     "train.device=cpu", "data.source=synthetic"])
        errors = [r.getMessage() for r in caplog.records if getattr(r, "user_error", False)]
        assert code == 2 and len(errors) == 1 and "in use by" in errors[0], errors
    finally:
        held.release()
