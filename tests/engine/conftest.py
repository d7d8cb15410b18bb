"""Shared fixtures of the engine tests: a tiny synthetic world and tiny-run overrides."""

import pytest

from constcl.data.synth import generate_world

STEPS = 6


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    generate_world(root, num_videos=12, seed=0, size=64, frames=32, workers=1, tracks="none")
    return root / "videos"


def tiny_overrides(world, out_dir, run_name, steps=STEPS):
    return [f"data.source={world}", "data.clip_frames=8", "data.size=32", "data.workers=0",
            "data.num_regions=4", "model.backbone=r3d_tiny", "model.context_length=3",
            "model.sync_bn=false", f"train.steps={steps}", "train.batch_size=4",
            "train.checkpoint_every=3", "train.log_every=1", "train.deterministic=true",
            "train.progress=plain", f"train.out_dir={out_dir}", f"train.run_name={run_name}",
            "train.device=cpu", "train.cpu_threads=1", "optim.warmup_steps=2", "optim.base_lr=2.0"]


