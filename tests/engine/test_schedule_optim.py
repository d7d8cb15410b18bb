import math

import numpy as np
import pytest
import torch
from torch import nn

from constcl.engine.lars import LARS
from constcl.engine.optim import build_optimizer, param_groups
from constcl.engine.schedule import scaled_lr, warmup_cosine
from constcl.models import build_model


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
    decay, no_decay = param_groups(model, 1e-6)
    decay_ids = {id(p) for p in decay["params"]}
    for name, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            is_weight = pname == "weight" and isinstance(module, nn.Conv3d | nn.Linear)
            assert (id(p) in decay_ids) == (is_weight or pname in ("w1", "w2")), f"{name}.{pname}"
    assert decay["weight_decay"] == 1e-6 and no_decay["weight_decay"] == 0.0
    total = sum(p.numel() for p in model.parameters())
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == total


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
