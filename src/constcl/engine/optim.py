"""Optimiser construction: weight decay on conv and linear weights only, SGD or LARS."""

from __future__ import annotations

import torch
from torch import nn

from constcl.engine.lars import LARS


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: conv / linear weights (decayed) and everything else (BN, biases, codes).

    SPEC 3: L2 1e-6 on conv and linear weights. The decoder's per-unit FFN weights are linear
    maps stored as (units, out, in) tensors and count as linear weights.
    """
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_weight = name == "weight" and isinstance(module, nn.Linear | nn.Conv3d | nn.Conv2d)
            is_unit_ffn = name in ("w1", "w2")
            (decay if is_weight or is_unit_ffn else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay, "lars_exclude": False},
            {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float,
                    weight_decay: float, lars_eta: float = 0.001) -> torch.optim.Optimizer:
    """``sgd`` (momentum, decoupled groups as above) or ``lars``."""
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        for g in groups:
            g.pop("lars_exclude")
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, eta=lars_eta)
    raise ValueError(f"optimizer name {name!r} is unknown; allowed: ['sgd', 'lars']")
