"""End-to-end pretraining runs in subprocesses: resume after SIGKILL at several points (the kill
matrix), a kill during a checkpoint write, resumes that would mix runs, NaN weights, and torchrun
with two CPU processes."""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from constcl.engine import checkpoint as ckpt
from tests.engine.conftest import STEPS, tiny_overrides


def run_pretrain(overrides, fault=None, torchrun=False):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(ckpt.FAULT_ENV, None)
    if fault:
        env[ckpt.FAULT_ENV] = fault
    launcher = [sys.executable]
    if torchrun:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd = launcher + ["-m", "constcl", "pretrain", "demo", *overrides]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def metric_steps(run_dir):
    return [json.loads(x)["step"] for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_model(run_dir):
    return ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, STEPS))["model"]


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.fixture(scope="module")
def straight_run(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    proc = run_pretrain(tiny_overrides(world, out, "straight"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out / "straight", proc


def test_straight_run_writes_the_run_folder(straight_run):
    run_dir, proc = straight_run
    for name in ("config.yaml", "git_sha.txt", "metrics.jsonl", "backbone.safetensors",
                 "summary.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").iterdir())
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == list(range(1, STEPS + 1))
    for key in ("loss", "loss_global", "loss_region", "global_accuracy", "lr", "clips_per_s",
                "data_wait_share", "region_pos_sim_mean", "region_neg_sim_mean",
                "attn_entropy", "region_match_accuracy", "region_match_chance",
                "region_contrast_accuracy"):
        assert key in lines[-1], key
    assert 0.0 <= lines[-1]["attn_entropy"] <= 1.0
    assert "global batch 4" in proc.stderr
    assert "starting a new run" in proc.stderr
    from safetensors import safe_open

    with safe_open(str(run_dir / "backbone.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert any(k.startswith("res5_global.") for k in keys)
    assert any(k.startswith("res5_local.") for k in keys)
    assert any(k.startswith("trunk.stem.") for k in keys)


@pytest.mark.parametrize("fault, resumed_from", [
    ("kill_at_step:1", 0),            # before the first checkpoint: starts afresh
    ("kill_at_step:2", 0),
    ("kill_during_checkpoint:3", 0),  # the first checkpoint torn: starts afresh
    ("kill_after_checkpoint:3", 3),   # right after a checkpoint
    ("kill_at_step:4", 3),            # between checkpoints, after the step was logged
    ("kill_at_step:5", 3),
    (f"kill_at_step:{STEPS}", 3),     # last step logged, final checkpoint not yet written
    # kill_during_checkpoint:STEPS: test_kill_during_checkpoint_write_keeps_previous
    (f"kill_after_checkpoint:{STEPS}", STEPS),  # final checkpoint written, no export yet
    (f"kill_during_export:{STEPS}", STEPS),  # backbone written, summary.json not yet
])
def test_sigkill_then_resume_equals_straight_run(world, straight_run, tmp_path, fault,
                                                 resumed_from):
    """The kill matrix: SIGKILL at one point, then the same command again; the final weights
    equal the uninterrupted run's bit for bit and every step is logged exactly once."""
    overrides = tiny_overrides(world, tmp_path, "resumed")
    killed = run_pretrain(overrides, fault=fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "resumed" / "summary.json").exists()
    resumed = run_pretrain(overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    if resumed_from:
        assert f"resuming from step {resumed_from} (checkpoint" in resumed.stderr
        assert f"step_{resumed_from:08d}.pt" in resumed.stderr
    else:
        assert "starting a new run" in resumed.stderr
    assert_same_weights(final_model(tmp_path / "resumed"), final_model(straight_run[0]))
    assert metric_steps(tmp_path / "resumed") == list(range(1, STEPS + 1))  # each step once
    assert (tmp_path / "resumed" / "summary.json").is_file()


def test_resume_from_a_checkpoint_with_the_old_scaler_key(world, straight_run, tmp_path):
    """Checkpoints written while an fp16 gradient scaler existed carry a ``scaler`` entry; it
    is ignored and the run continues exactly as the straight run."""
    old = ckpt.load_checkpoint(ckpt.checkpoint_path(straight_run[0], 3))
    assert "scaler" not in old
    old["scaler"] = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                     "growth_interval": 2000, "_growth_tracker": 3}
    path = tmp_path / "old_format.pt"
    torch.save(old, path)
    resumed = run_pretrain(tiny_overrides(world, tmp_path, "from_old") + [f"train.resume={path}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_weights(final_model(tmp_path / "from_old"), final_model(straight_run[0]))


def test_kill_during_checkpoint_write_keeps_previous(world, straight_run, tmp_path):
    overrides = tiny_overrides(world, tmp_path, "torn")
    killed = run_pretrain(overrides, fault=f"kill_during_checkpoint:{STEPS}")
    assert killed.returncode == -9, killed.stderr[-2000:]
    folder = ckpt.checkpoint_dir(tmp_path / "torn")
    assert list(folder.glob(".step_*.tmp*")), "the torn temporary file should be left behind"
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "torn")] == ["step_00000003.pt"]
    ckpt.load_checkpoint(folder / "step_00000003.pt")  # the previous checkpoint still loads
    resumed = run_pretrain(overrides)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step_00000003.pt" in resumed.stderr
    assert not list(folder.glob(".step_*.tmp*"))
    assert_same_weights(final_model(tmp_path / "torn"), final_model(straight_run[0]))
    assert metric_steps(tmp_path / "torn") == list(range(1, STEPS + 1))


def copy_of(run_dir, tmp_path, name="copy"):
    shutil.copytree(run_dir, tmp_path / name)
    return tmp_path / name


def test_resume_with_another_backbone_is_refused_before_writing(world, straight_run, tmp_path):
    run_dir = copy_of(straight_run[0], tmp_path)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    proc = run_pretrain(tiny_overrides(world, tmp_path, "copy") + ["model.backbone=r3d_small"])
    assert proc.returncode != 0
    assert "model.backbone: 'r3d_tiny' -> 'r3d_small'" in proc.stderr, proc.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert not (run_dir / "config_history.jsonl").exists()


def test_resume_with_another_batch_size_needs_permission(world, straight_run, tmp_path):
    run_dir = copy_of(straight_run[0], tmp_path)
    config_before = (run_dir / "config.yaml").read_bytes()
    changed = tiny_overrides(world, tmp_path, "copy", steps=STEPS + 2) + ["train.batch_size=2"]
    refused = run_pretrain(changed)
    assert refused.returncode != 0
    assert "train.batch_size: 4 -> 2" in refused.stderr and "train.steps: 6 -> 8" in refused.stderr
    assert "train.resume_allow_changes" in refused.stderr
    assert (run_dir / "config.yaml").read_bytes() == config_before

    allowed = run_pretrain(changed + ["train.resume_allow_changes=train.batch_size,train.steps"])
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "WARNING" in allowed.stderr and "train.batch_size 4 -> 2" in allowed.stderr
    history = [json.loads(x) for x in (run_dir / "config_history.jsonl").read_text().splitlines()]
    assert history == [{"step": STEPS, "changes": {"train.batch_size": [4, 2],
                                                   "train.steps": [STEPS, STEPS + 2]}}]
    assert metric_steps(run_dir) == list(range(1, STEPS + 3))
    assert "batch_size: 2" in (run_dir / "config.yaml").read_text()


def test_no_checkpoint_but_previous_outputs_refuses_to_start_over(world, straight_run, tmp_path):
    run_dir = copy_of(straight_run[0], tmp_path)
    shutil.rmtree(run_dir / "checkpoints")
    refused = run_pretrain(tiny_overrides(world, tmp_path, "copy"))
    assert refused.returncode != 0
    assert "train.resume=restart" in refused.stderr and "backbone.safetensors" in refused.stderr
    restarted = run_pretrain(tiny_overrides(world, tmp_path, "copy") + ["train.resume=restart"])
    assert restarted.returncode == 0, restarted.stderr[-3000:]
    assert "starting a new run" in restarted.stderr
    assert metric_steps(run_dir) == list(range(1, STEPS + 1))
    moved = list(run_dir.glob("replaced-*"))
    assert len(moved) == 1 and (moved[0] / "backbone.safetensors").is_file()
    assert_same_weights(final_model(run_dir), final_model(straight_run[0]))


def test_nan_weights_stop_the_run_without_export(world, tmp_path):
    proc = run_pretrain(tiny_overrides(world, tmp_path, "nan"), fault="corrupt_weights:4")
    assert proc.returncode not in (0, -9)
    assert "step 4: 1 parameter tensor(s) hold NaN/Inf" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "nan" / "backbone.safetensors").exists()
    assert not (tmp_path / "nan" / "summary.json").exists()
    assert [p.name for p in ckpt.list_checkpoints(tmp_path / "nan")] == ["step_00000003.pt"]


def test_torchrun_two_cpu_processes_end_identical(world, tmp_path):
    proc = run_pretrain(tiny_overrides(world, tmp_path, "ddp", steps=3), torchrun=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    summary = json.loads((tmp_path / "ddp" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 8
    fingerprints = summary["weights_fingerprints"]
    assert len(fingerprints) == 2 and fingerprints[0] == fingerprints[1]
    assert "4 videos per process x 2 processes" in proc.stderr
    # the rate follows the global batch: peak = base_lr 2.0 x 8 / 256; warm-up of 2 steps, then
    # the cosine's first (and only) step at the peak
    peak = 2.0 * 8 / 256
    lines = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2, 3]
    assert [r["lr"] for r in lines] == pytest.approx([peak / 2, peak, peak], rel=1e-12)
