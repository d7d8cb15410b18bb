"""Relative update size per network part: hand-computed values and a tiny real run."""

import json
import math

import pytest
import torch

from constcl.config import load_config
from constcl.engine.monitor import UpdateMonitor, network_parts
from constcl.engine.pretrain import pretrain
from constcl.models import build_model
from tests.engine.conftest import tiny_overrides

PARTS = ("trunk", "res5_global", "res5_local", "global_head", "region_head")


def test_parts_cover_every_parameter_once():
    model = build_model("r3d_tiny", context_length=3)
    parts = network_parts(model)
    assert tuple(parts) == PARTS
    ids = [id(p) for ps in parts.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    res5 = {id(p) for p in model.backbone.res5.parameters()}
    assert {id(p) for p in parts["res5_global"]} == res5
    assert {id(p) for p in parts["res5_local"]} == {id(p) for p in model.res5_local.parameters()}
    assert "res5_local" not in network_parts(build_model("r3d_tiny", variant="cvrl"))


def test_ratio_by_hand():
    model = build_model("r3d_tiny", context_length=3)
    monitor = UpdateMonitor(model)
    head = monitor.parts["global_head"]
    norm = math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in head))
    monitor.before()
    with torch.no_grad():
        head[0].view(-1)[0] += 3.0  # one entry moved by 3, another by 4: ||delta|| = 5
        head[-1].view(-1)[-1] -= 4.0
    ratios = monitor.after()
    assert ratios["update_ratio_global_head"] == pytest.approx(5.0 / norm, rel=1e-5)
    for part in ("trunk", "res5_global", "res5_local", "region_head"):
        assert ratios[f"update_ratio_{part}"] == 0.0


def _ratios(world, out, name, extra):
    """Mean update ratios over the last 4 of 32 steps of a small run at a constant rate (the
    first steps are a transient: momentum builds up and BN-scaled weights grow)."""
    cfg = load_config(None, tiny_overrides(world, out, name, steps=32) + [
        "model.backbone=r3d_small", "data.size=64", "train.batch_size=8",
        "train.deterministic=false", "optim.base_lr=0.32", "optim.warmup_steps=0",
        "optim.final_lr_fraction=1", "train.checkpoint_every=100"] + extra)
    run_dir = pretrain(cfg)
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(f"update_ratio_{p}" in line for p in PARTS for line in lines)
    last = lines[-4:]
    return {p: sum(r[f"update_ratio_{p}"] for r in last) / len(last) for p in PARTS}


def test_every_branch_trains_in_a_small_run(world, tmp_path):
    """Auto coupling: the local branch's relative update is within 10x of the trunk's. The
    reference coupling (scale 1) leaves it orders of magnitude behind, so the check can fail."""
    auto = _ratios(world, tmp_path, "auto", [])
    for part in PARTS:
        assert auto[part] > 0, part
    assert auto["trunk"] / 10 <= auto["res5_local"] <= 10 * auto["trunk"], auto
    assert auto["trunk"] / 10 <= auto["region_head"] <= 10 * auto["trunk"], auto
    reference = _ratios(world, tmp_path, "reference", ["optim.local_lr_scale=1"])
    assert reference["res5_local"] < auto["trunk"] / 100, reference
