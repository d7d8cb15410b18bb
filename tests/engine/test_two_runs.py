"""Issue 23, case 2, end to end: two ``constcl pretrain`` into one run folder.

Before: the second started too (it moved the first's ``metrics.jsonl`` aside, then both wrote
the folder: steps twice in the metrics, checkpoints of two seeds, a config of one run next to
the weights of the other). Now it stops at once, naming the first.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import yaml

from .conftest import tiny_overrides


def test_second_pretrain_into_a_busy_run_folder_is_refused(world, tmp_path):
    overrides = [*tiny_overrides(world, tmp_path, "run", steps=2000), "train.checkpoint_every=1000"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "constcl", "pretrain", *overrides]
    first = subprocess.Popen([*cmd, "train.seed=0"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (metrics.exists() and metrics.read_text()):
            time.sleep(0.05)
        second = subprocess.run([*cmd, "train.seed=1"], env=env, capture_output=True,
                                text=True, timeout=120)
        assert first.poll() is None, "the first run should still be training"
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    errors = [line for line in second.stderr.splitlines() if line.startswith("constcl: error:")]
    assert second.returncode == 2 and len(errors) == 1, second.stderr[-2000:]
    assert f"PID {first.pid}" in errors[0] and "in use by 'constcl pretrain'" in errors[0]
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["seed"] == 0
    assert not list((tmp_path / "run").glob("replaced-*"))  # nothing of the first was moved
