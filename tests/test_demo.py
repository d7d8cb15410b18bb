"""``constcl demo`` end to end on a tiny built-in world, and the kill matrix's last point: a
SIGKILL during the demo's final probe, then the same command again."""

import json
import os
import subprocess
import sys

import torch

from constcl.engine import checkpoint as ckpt
from constcl.faults import FAULT_ENV

STEPS = 4


def run_demo(root, name, fault=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    overrides = [
        f"data.synth_dir={root / 'world'}", "data.synth_videos=24", "data.synth_size=64",
        "data.clip_frames=8", "data.size=32", "data.workers=0", "data.num_regions=4",
        "model.backbone=r3d_tiny", "model.context_length=3", f"train.steps={STEPS}",
        "train.batch_size=4", "train.checkpoint_every=2", "train.log_every=1",
        "train.deterministic=true", "train.progress=plain", f"train.out_dir={root / 'runs'}",
        f"train.run_name={name}", "train.device=cpu", "train.cpu_threads=1",
        "optim.warmup_steps=2"]
    return subprocess.run([sys.executable, "-m", "constcl", "demo", *overrides], env=env,
                          capture_output=True, text=True, timeout=300)


def probe_line(stdout):
    return next(line for line in stdout.splitlines() if line.startswith("linear probe top-1"))


def test_kill_during_the_final_probe_then_rerun_equals_a_straight_demo(tmp_path):
    straight = run_demo(tmp_path, "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run_demo(tmp_path, "resumed", fault="kill_during_probe:0")
    assert killed.returncode == -9, killed.stderr[-2000:]
    run_dir = tmp_path / "runs" / "resumed"
    assert (run_dir / "summary.json").is_file()  # pretraining had finished
    assert not (run_dir / "probe" / "results.json").exists()  # the probe had not
    again = run_demo(tmp_path, "resumed")
    assert again.returncode == 0, again.stderr[-3000:]
    assert probe_line(again.stdout) == probe_line(straight.stdout)
    for folder in ("probe", "probe_random_init"):
        ours = json.loads((run_dir / folder / "results.json").read_text())["metrics"]
        theirs = json.loads((tmp_path / "runs" / "straight" / folder / "results.json")
                            .read_text())["metrics"]
        assert ours == theirs, folder
    a = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, STEPS))["model"]
    b = ckpt.load_checkpoint(ckpt.checkpoint_path(tmp_path / "runs" / "straight", STEPS))["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1))
