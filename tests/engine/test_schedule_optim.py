import math

import numpy as np
import pytest
import torch
from torch import nn

from constcl.engine.lars import LARS
from constcl.engine.optim import auto_local_lr_scale, build_optimizer, param_groups
from constcl.engine.step import TrainStep
from constcl.models import LossWeights, build_model
from constcl.schedule import scaled_lr, warmup_cosine


def test_linear_scaling_rule():
    assert scaled_lr(0.32, 1024) == pytest.approx(1.28)
    assert scaled_lr(0.1, 256) == pytest.approx(0.1)


def test_warmup_cosine_end_points():
    lrs = warmup_cosine(1.0, steps=110, warmup_steps=10, final=0.1)
    assert len(lrs) == 110
    assert lrs[0] == pytest.approx(0.1)          # 1 / 10 of the peak after the first step
    assert lrs[9] == pytest.approx(1.0)          # peak at the end of warm-up
    assert lrs[10] == pytest.approx(1.0)         # cosine starts at the peak
    assert lrs[-1] == pytest.approx(0.1)         # ends at the final value
    assert np.all(np.diff(lrs[:10]) > 0) and np.all(np.diff(lrs[10:]) <= 1e-12)
    # half-way through the cosine: the midpoint of peak and final
    mid = warmup_cosine(1.0, steps=101, warmup_steps=0, final=0.0)[50]
    assert mid == pytest.approx(0.5)


def test_weight_decay_only_on_conv_and_linear_weights():
    model = build_model("r3d_tiny", context_length=3)
    groups = param_groups(model, 1e-6)
    decay_ids = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            is_weight = pname == "weight" and isinstance(module, nn.Conv3d | nn.Linear)
            assert (id(p) in decay_ids) == (is_weight or pname in ("w1", "w2")), f"{name}.{pname}"
    assert {g["weight_decay"] for g in groups} == {1e-6, 0.0}
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == total


def _region_only_ids(model):
    return {id(p) for m in (model.res5_local, model.region_head) for p in m.parameters()}


@pytest.mark.parametrize("variant,source", [("constcl", "y"), ("region", "y"),
                                            ("constcl", "shared"), ("constcl", "res4")])
def test_region_only_groups_get_the_scale(variant, source):
    model = build_model("r3d_tiny", variant=variant, local_source=source, context_length=3)
    groups = param_groups(model, 1e-6, local_lr_scale=1000.0)
    expected = {id(p) for m in (model.res5_local, model.region_head) if m is not None
                for p in m.parameters()}
    assert expected  # every region variant has a region head
    for g in groups:
        ids = {id(p) for p in g["params"]}
        local = g["name"].startswith("region_only")
        assert ids <= expected if local else not ids & expected
        assert g["lr_scale"] == (1000.0 if local else 1.0)
        if g["weight_decay"]:
            assert g["weight_decay"] == pytest.approx(1e-6 / g["lr_scale"])
    assert expected == {id(p) for g in groups if g["name"].startswith("region_only")
                        for p in g["params"]}


def test_lars_scales_only_the_gradient_proportional_region_groups():
    model = build_model("r3d_tiny", context_length=3)
    groups = {g["name"]: g for g in param_groups(model, 1e-6, 1000.0, optimizer="lars")}
    assert groups["region_only_decay"]["lr_scale"] == 1.0         # trust ratio normalises
    assert groups["region_only_no_decay"]["lr_scale"] == 1000.0   # plain SGD steps under LARS
    assert groups["shared_decay"]["lr_scale"] == groups["shared_no_decay"]["lr_scale"] == 1.0


def test_sgd_step_trains_region_only_parameters_on_the_unweighted_region_loss():
    """With local_lr_scale = 1 / w, one SGD step moves the region-only parameters by
    lr * dL_l/dθ and the shared ones by lr * d(L_g + w L_l)/dθ (gradients from autograd on
    each loss separately)."""
    torch.manual_seed(0)
    w, lr = 1e-3, 0.05
    model = build_model("r3d_tiny", context_length=1,
                        losses=LossWeights(region_weight=w)).eval()  # eval: BN fixed
    views = [torch.randn(3, 3, 4, 32, 32) for _ in range(2)]
    boxes = torch.tensor([[0.1, 0.1, 0.6, 0.7], [0.3, 0.2, 0.9, 0.9]]).expand(3, 2, 4)
    out = model(*views, boxes, boxes)
    params = dict(model.named_parameters())
    g_global = torch.autograd.grad(out["loss_global"], list(params.values()), allow_unused=True,
                                   retain_graph=True)
    g_region = torch.autograd.grad(out["loss_region"], list(params.values()), allow_unused=True)
    before = {k: p.detach().clone() for k, p in params.items()}
    opt = build_optimizer(model, "sgd", lr, momentum=0.0, weight_decay=0.0,
                          local_lr_scale=auto_local_lr_scale(w))
    step = TrainStep(model, opt, "fp32", "cpu")
    step([{"view_a": views[0], "view_b": views[1], "boxes_a": boxes, "boxes_b": boxes}], lr)
    local = _region_only_ids(model)
    for (name, p), gg, gr in zip(params.items(), g_global, g_region, strict=True):
        gg = torch.zeros_like(p) if gg is None else gg
        gr = torch.zeros_like(p) if gr is None else gr
        expected = gr if id(p) in local else gg + w * gr
        torch.testing.assert_close(before[name] - p.detach(), lr * expected, atol=1e-7,
                                   rtol=1e-4, msg=name)
    moved = [name for name, p in params.items() if id(p) in local
             and not torch.equal(before[name], p.detach())]
    assert moved, "region-only parameters did not move"


def test_auto_scale():
    assert auto_local_lr_scale(1e-3) == pytest.approx(1000.0)
    assert auto_local_lr_scale(0.5) == pytest.approx(2.0)
    assert auto_local_lr_scale(0.0) == 1.0


def test_lars_step_by_hand():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))      # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "weight_decay": 0.0, "lars_exclude": False},
                {"params": [b], "weight_decay": 0.0, "lars_exclude": True}],
               lr=0.1, momentum=0.9, eta=0.01)
    w.grad = torch.tensor([0.0, 2.0])                 # ||g|| = 2 -> trust = 0.01 * 5 / 2
    b.grad = torch.tensor([1.0])
    opt.step()
    trust = 0.01 * 5 / 2
    assert w.tolist() == pytest.approx([3.0, 4.0 - 0.1 * trust * 2.0])
    assert b.tolist() == pytest.approx([1.0 - 0.1])  # excluded: plain SGD
    w.grad = torch.tensor([0.0, 2.0])
    b.grad = torch.tensor([1.0])
    opt.step()  # momentum: buffer = 0.9 * 1 + 1 = 1.9 for b
    assert b.item() == pytest.approx(0.9 - 0.1 * 1.9)
    assert math.isfinite(w.sum().item())


def test_build_optimizer_names():
    model = nn.Linear(2, 2)
    assert isinstance(build_optimizer(model, "sgd", 0.1, 0.9, 1e-6), torch.optim.SGD)
    assert isinstance(build_optimizer(model, "lars", 0.1, 0.9, 1e-6), LARS)
    with pytest.raises(ValueError, match="sgd"):
        build_optimizer(model, "adam", 0.1, 0.9, 0.0)
