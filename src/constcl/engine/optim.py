"""Optimiser construction: weight decay on conv and linear weights only, SGD or LARS, and the
learning-rate scale of the region-only parameters.

Why the region-only parameters get their own learning rate (the arithmetic is in
``docs/method.md``): the total loss is ``L_g + w L_l`` with ``w = 0.001``
(docs/spec.md section 3). The
parameters that only ``L_l`` reaches (the local res5 copy and the region head) therefore get
gradients 1000x smaller than their own loss would give them, and with a learning rate near 1
they stay at their random initialisation. Multiplying their learning rate by ``1 / w`` makes
their SGD step ``lr * dL_l/dθ``: they train on the region loss at the same rate as the trunk
trains on the global loss, while the shared trunk still sees the reference's ``1 : 0.001``
balance between the two losses.
"""

from __future__ import annotations

import torch
from torch import nn

from constcl.engine.lars import LARS, masked_momentum_step

OPTIMIZERS = ("sgd", "lars")


def region_only_modules(model: nn.Module) -> list[nn.Module]:
    """The sub-modules that only the region loss reaches (``res5_local``, ``region_head``)."""
    return [m for m in (getattr(model, "res5_local", None), getattr(model, "region_head", None))
            if m is not None]


def auto_local_lr_scale(region_weight: float) -> float:
    """``1 / region_weight`` (1 when the region loss is off)."""
    return 1.0 / region_weight if region_weight > 0 else 1.0


def param_groups(model: nn.Module, weight_decay: float, local_lr_scale: float = 1.0,
                 optimizer: str = "sgd") -> list[dict]:
    """Parameter groups: (shared | region-only) x (decayed | not decayed).

    docs/spec.md section 3: L2 ``weight_decay`` on conv and linear weights only (the decoder's
    per-unit FFN weights are linear maps stored as (units, out, in) tensors and count too, and
    so do the positional code's linear weights); BN parameters, biases and the LayerNorm
    affine are not decayed.

    Every group carries ``lr_scale``: the training step sets ``lr = schedule(step) * lr_scale``.
    Region-only groups get ``local_lr_scale`` where the optimiser's step is proportional to the
    gradient (every group under SGD; the ``lars_exclude`` groups under LARS, whose other groups
    are normalised per layer by the trust ratio and keep scale 1). Their weight decay is divided
    by the same scale, so the decay per step (``lr * lr_scale * wd``) stays ``lr * wd``.
    Empty groups are dropped.
    """
    if local_lr_scale <= 0:
        raise ValueError(f"local_lr_scale must be positive; got {local_lr_scale}")
    local_ids = {id(p) for m in region_only_modules(model) for p in m.parameters()}
    buckets: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (local, decay): [] for local in (False, True) for decay in (True, False)}
    seen: set[int] = set()
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            is_weight = name == "weight" and isinstance(module, nn.Linear | nn.Conv3d | nn.Conv2d)
            is_unit_ffn = name in ("w1", "w2")
            buckets[(id(p) in local_ids, is_weight or is_unit_ffn)].append(p)
    groups = []
    for (local, decay), params in buckets.items():
        if not params:
            continue
        lars_exclude = not decay
        proportional = optimizer == "sgd" or lars_exclude
        scale = local_lr_scale if (local and proportional) else 1.0
        groups.append({"params": params, "weight_decay": weight_decay / scale if decay else 0.0,
                       "lars_exclude": lars_exclude, "lr_scale": scale,
                       "name": f"{'region_only' if local else 'shared'}_"
                               f"{'decay' if decay else 'no_decay'}"})
    return groups


def build_optimizer(model: nn.Module, name: str, lr: float, momentum: float,
                    weight_decay: float, lars_eta: float = 0.001,
                    local_lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """``sgd`` (momentum, :class:`MaskedSGD`) or ``lars`` over :func:`param_groups`, with
    their momentum buffers created (:func:`init_momentum_buffers`)."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer name {name!r} is unknown; allowed: {list(OPTIMIZERS)}")
    groups = param_groups(model, weight_decay, local_lr_scale, name)
    for g in groups:
        g["lr"] = lr * g["lr_scale"]
    if name == "sgd":
        for g in groups:
            g.pop("lars_exclude")
        optimizer = MaskedSGD(groups, lr=lr, momentum=momentum)
    else:
        optimizer = LARS(groups, lr=lr, momentum=momentum, eta=lars_eta)
    init_momentum_buffers(optimizer)
    return optimizer


class MaskedSGD(torch.optim.SGD):
    """``torch.optim.SGD`` whose step can be skipped on the device: ``step(ok=flag)`` applies
    momentum SGD with weight decay only where the 0-dim bool tensor ``flag`` is true and leaves
    parameters and momentum buffers exactly as they were otherwise, without reading ``flag`` on
    the host (``lars.masked_momentum_step``; every buffer must exist). Without ``ok`` it is
    torch's SGD step. The masked step rounds ``p - lr * buf`` as a product then a sum, which can
    differ from torch's fused form in the last bit.
    """

    supports_ok_mask = True

    @torch.no_grad()
    def step(self, closure=None, ok: torch.Tensor | None = None):
        if ok is None:
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["nesterov"] or group["dampening"] or group["maximize"]:
                raise ValueError("MaskedSGD.step(ok=...) supports plain momentum only "
                                 "(no nesterov, dampening or maximize)")
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]  # weight decay added in place, as clipping does
            if group["weight_decay"]:
                torch._foreach_add_(grads, params, alpha=group["weight_decay"])
            masked_momentum_step(params, grads,
                                 [self.state[p].get("momentum_buffer") for p in params],
                                 group["momentum"], group["lr"], ok)
        return loss


def init_momentum_buffers(optimizer: torch.optim.Optimizer) -> None:
    """Create every parameter's momentum buffer now, as zeros (None where momentum is 0).

    SGD and LARS would create it in their first step as a copy of the first update; a zero
    buffer gives the same first step bit for bit (``0 * momentum + u = u``). With the state in
    place before the first step, ``engine.step.TrainStep`` can skip a step on the device
    (including the first one) instead of reading its non-finite flag on the host.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = (torch.zeros_like(p, memory_format=torch.preserve_format)
                                            if group["momentum"] else None)
