"""LARS: SGD with momentum and a layer-wise trust ratio (You et al. 2017), as in SimCLR / CVRL."""

from __future__ import annotations

import torch


class LARS(torch.optim.Optimizer):
    """SGD + momentum whose update of each parameter is scaled by eta * ||w|| / ||g + wd w||.

    Groups with ``lars_exclude=True`` (BN parameters and biases) take plain SGD steps, as in the
    SimCLR reference. Weight decay is added to the gradient before the trust ratio. The
    momentum buffer is created in the first step unless it exists (``optim.build_optimizer``
    creates it as zeros, which gives the same first step); momentum 0 uses none.
    """

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                        lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if group["weight_decay"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                if not group["lars_exclude"]:
                    w_norm, g_norm = torch.linalg.norm(p), torch.linalg.norm(grad)
                    trust = torch.where((w_norm > 0) & (g_norm > 0),
                                        group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    grad = grad.mul(trust)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if not group["momentum"]:
                    update = grad
                elif buf is None:
                    update = state["momentum_buffer"] = torch.clone(grad).detach()
                else:  # in place: engine.step.TrainStep undoes a skipped step on this tensor
                    update = buf.mul_(group["momentum"]).add_(grad)
                p.add_(update, alpha=-group["lr"])
        return loss
