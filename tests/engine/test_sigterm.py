"""Issue 23, case 7: SIGTERM to a pretraining run with DataLoader workers.

Before: the workers' deaths made PyTorch print "DataLoader worker ... is killed by signal"
tracebacks (or, with only the main process signalled, a bare exit by signal); now one line,
exit code 143, no worker left, the folder lock released, and the same command resumes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from constcl.runlock import LOCK_NAME

from .conftest import tiny_overrides


def test_sigterm_mid_run_is_one_line_and_the_rerun_resumes(world, tmp_path):
    """SIGTERM to the process group (a batch system, ``timeout``): the workers die of it too,
    which is what made PyTorch raise in the main process."""
    overrides = [*tiny_overrides(world, tmp_path, "run", steps=30), "data.workers=2",
                 "train.checkpoint_every=3"]
    cmd = [sys.executable, "-m", "constcl", "pretrain", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    checkpoints = tmp_path / "run" / "checkpoints"
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list(checkpoints.glob("step_*.pt")):
            time.sleep(0.05)
        assert list(checkpoints.glob("step_*.pt")), "no checkpoint was written in time"
        os.killpg(proc.pid, signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    others = [line for line in stderr.splitlines() if " INFO " not in line and line.strip()]
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert len(others) == 1 and others[0].startswith("constcl: error: stopped by SIGTERM"), \
        others
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    rerun = subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "resuming from step" in rerun.stderr and "done: 30 steps" in rerun.stderr
