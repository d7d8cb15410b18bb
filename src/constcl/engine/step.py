"""One optimiser step: autocast, gradient accumulation, non-finite skipping, clipping, update.

One helper for every precision, so the training loop does not fork into bf16 / fp32 copies
(bf16 has fp32's exponent range, so no gradient scaler is needed). A NaN or Inf loss on any
process makes every process skip the step together (the check is an all-reduce of one flag), so
DDP never waits on a missing backward.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

from constcl import dist

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class StepResult:
    metrics: dict[str, float]
    skipped: bool
    grad_norm: float | None = None


class TrainStep:
    """Callable running one optimiser step over a list of micro-batches (dicts of model kwargs).

    Args:
        model: the (possibly DDP-wrapped) model returning a dict with ``loss``.
        optimizer: its optimiser.
        precision: bf16 autocast or fp32.
        device_type: "cuda" or "cpu".
        clip_grad_norm: clip the global gradient norm to this (0: off).
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, precision: str,
                 device_type: str, clip_grad_norm: float = 0.0) -> None:
        if precision not in DTYPES:
            raise ValueError(f"precision must be one of {list(DTYPES)}; got {precision!r}")
        self.model, self.optimizer = model, optimizer
        self.precision, self.device_type = precision, device_type
        self.clip_grad_norm = clip_grad_norm

    def autocast(self):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.precision])

    def _all_finite(self, loss: torch.Tensor) -> bool:
        bad = (~torch.isfinite(loss.detach())).float().reshape(1)
        return dist.all_reduce_sum_no_grad(bad).item() == 0

    def __call__(self, micro_batches: list[dict[str, torch.Tensor]], lr: float) -> StepResult:
        """One step at schedule rate ``lr`` (each group runs at ``lr * group["lr_scale"]``)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        n = len(micro_batches)
        sums: dict[str, float] = {}
        for i, batch in enumerate(micro_batches):
            last = i == n - 1
            no_sync = getattr(self.model, "no_sync", None)
            with no_sync() if (no_sync is not None and not last) else nullcontext():
                with self.autocast():
                    out = self.model(**batch)
                if not self._all_finite(out["loss"]):
                    self.optimizer.zero_grad(set_to_none=True)
                    return StepResult({k: float(v.detach()) for k, v in out.items()}, skipped=True)
                (out["loss"] / n).backward()
            for key, value in out.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / n
        grad_norm = None
        if self.clip_grad_norm > 0:
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            grad_norm = float(nn.utils.clip_grad_norm_(params, self.clip_grad_norm))
        self.optimizer.step()
        return StepResult(sums, skipped=False, grad_norm=grad_norm)
