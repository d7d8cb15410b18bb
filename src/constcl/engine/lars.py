"""LARS: SGD with momentum and a layer-wise trust ratio (You et al. 2017), as in SimCLR / CVRL."""

from __future__ import annotations

import torch


@torch.no_grad()
def masked_momentum_step(params: list[torch.Tensor], grads: list[torch.Tensor],
                         buffers: list[torch.Tensor | None], momentum: float, lr: float,
                         ok: torch.Tensor) -> None:
    """``buf <- momentum * buf + g; p <- p - lr * buf`` where the 0-dim bool ``ok`` is true, and
    every ``p`` and ``buf`` exactly as it was where it is false, decided on the device.

    A skipped step becomes a no-op in the same kernels: the gradients are replaced by 0 (NaN /
    Inf included), the momentum by 1 and the rate by 0, so ``buf * 1 + 0`` and ``p - 0 * buf``
    leave both unchanged (buffers exist: ``optim.build_optimizer`` creates them; None entries
    when ``momentum`` is 0, which uses none). ``grads`` are overwritten (they may be the
    parameters' ``.grad``); every operation is in place (fresh tensors of the model's size cost
    more than the arithmetic on a CPU).
    """
    skip = ~ok
    for g in grads:
        g.masked_fill_(skip, 0.0)
    updates = grads
    if momentum:
        torch._foreach_mul_(buffers, torch.where(ok, momentum, 1.0))
        torch._foreach_add_(buffers, grads)
        updates = buffers
    rate = torch.where(ok, -lr, 0.0)
    for p, u in zip(params, updates, strict=True):
        p.addcmul_(u, rate)


class LARS(torch.optim.Optimizer):
    """SGD + momentum whose update of each parameter is scaled by eta * ||w|| / ||g + wd w||.

    Groups with ``lars_exclude=True`` (BN parameters and biases) take plain SGD steps, as in the
    SimCLR reference. Weight decay is added to the gradient before the trust ratio. The
    momentum buffer is created in the first step unless it exists (``optim.build_optimizer``
    creates it as zeros, which gives the same first step); momentum 0 uses none.
    ``step(ok=flag)`` applies the step only where the 0-dim bool device tensor ``flag`` is true
    (:func:`masked_momentum_step`, no host read; every buffer must exist).
    """

    supports_ok_mask = True

    def __init__(self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0,
                 eta: float = 0.001) -> None:
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta,
                        lars_exclude=False)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None, ok: torch.Tensor | None = None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            masked: tuple[list, list, list] = ([], [], [])
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
                if ok is not None:
                    for column, value in zip(masked, (p, grad, state.get("momentum_buffer")),
                                             strict=True):
                        column.append(value)
                    continue
                buf = state.get("momentum_buffer")
                if not group["momentum"]:
                    update = grad
                elif buf is None:
                    update = state["momentum_buffer"] = torch.clone(grad).detach()
                else:  # in place: engine.step.TrainStep undoes a skipped step on this tensor
                    update = buf.mul_(group["momentum"]).add_(grad)
                p.add_(update, alpha=-group["lr"])
            if masked[0]:
                masked_momentum_step(*masked, group["momentum"], group["lr"], ok)
        return loss
