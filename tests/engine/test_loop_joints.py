"""Joints of the training loop, each against an independent computation: the learning rate
applied to every parameter group and logged at every step equals the schedule written out by
hand (with accumulation), and every trained parameter moves."""

import json
import math

import pytest
import torch

import constcl.engine.pretrain as pretrain_module
from constcl.config import load_config
from constcl.engine import checkpoint as ckpt
from constcl.engine.step import TrainStep
from tests.engine.conftest import tiny_overrides

BASE_LR, BATCH, ACCUM, STEPS, WARMUP, FINAL = 2.0, 4, 2, 6, 2, 0.1


def schedule_by_hand(step: int) -> float:
    """Rate of 0-based ``step``: peak = base x global batch / 256, linear warm-up over WARMUP
    steps (step 0 at peak / WARMUP), then half a cosine to FINAL x peak at the last step."""
    peak = BASE_LR * BATCH * ACCUM / 256
    if step < WARMUP:
        return peak * (step + 1) / WARMUP
    t = (step - WARMUP) / (STEPS - WARMUP - 1)
    return FINAL * peak + 0.5 * (peak - FINAL * peak) * (1 + math.cos(math.pi * t))


@pytest.fixture(scope="module")
def recorded_run(world, tmp_path_factory, monkeypatch_module):
    applied, initial = [], {}
    original_call, original_build = TrainStep.__call__, pretrain_module.build_network

    def call(self, micro_batches, lr):
        result = original_call(self, micro_batches, lr)
        applied.append({"n_micro": len(micro_batches), "schedule_lr": lr,
                        "groups": [(g["name"], g["lr"], g["lr_scale"])
                                   for g in self.optimizer.param_groups]})
        return result

    def build(cfg, device):
        model, plain = original_build(cfg, device)
        initial.update({k: v.detach().clone() for k, v in plain.named_parameters()})
        return model, plain

    monkeypatch_module.setattr(TrainStep, "__call__", call)
    monkeypatch_module.setattr(pretrain_module, "build_network", build)
    out = tmp_path_factory.mktemp("loop")
    cfg = load_config(None, tiny_overrides(world, out, "loop", steps=STEPS) + [
        f"optim.base_lr={BASE_LR}", f"optim.accumulation_steps={ACCUM}",
        f"optim.warmup_steps={WARMUP}", f"optim.final_lr_fraction={FINAL}",
        "optim.local_lr_scale=7", "train.checkpoint_every=100", "train.deterministic=false"])
    run_dir = pretrain_module.pretrain(cfg)
    return run_dir, applied, initial


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_applied_and_logged_lr_follow_the_schedule(recorded_run):
    run_dir, applied, _ = recorded_run
    assert len(applied) == STEPS
    for step, record in enumerate(applied):
        expected = schedule_by_hand(step)
        assert record["n_micro"] == ACCUM
        assert record["schedule_lr"] == pytest.approx(expected, rel=1e-9)
        names = set()
        for name, lr, _scale in record["groups"]:
            names.add(name)
            want = expected * (7.0 if name.startswith("region_only") else 1.0)
            assert lr == pytest.approx(want, rel=1e-9), (step, name)
        assert {"shared_decay", "region_only_decay"} <= names
    logged = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, STEPS + 1))
    for record in logged:
        assert record["lr"] == pytest.approx(schedule_by_hand(record["step"] - 1), rel=1e-9)


def test_every_trained_parameter_moves(recorded_run):
    run_dir, _, initial = recorded_run
    final = ckpt.load_checkpoint(ckpt.checkpoint_path(run_dir, STEPS))["model"]
    prefixes = ("backbone.stem", "backbone.res2", "backbone.res5", "res5_local", "global_head",
                "region_head")
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in initial), prefix
    # The attention key bias adds the same q . b_k to every logit of a query, which the
    # softmax ignores: its gradient is exactly zero (docs/spec.md section 2 asks for the bias
    # all the same).
    inert = {k for k in initial if k.endswith(".k.bias")}
    assert inert and all(torch.equal(initial[k], final[k]) for k in inert)
    unchanged = [k for k, v in initial.items() if k not in inert and torch.equal(v, final[k])]
    assert not unchanged, unchanged
