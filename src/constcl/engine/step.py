"""One optimiser step: autocast, gradient accumulation, non-finite skipping, clipping, update.

One helper for every precision, so the training loop does not fork into bf16 / fp32 copies
(bf16 has fp32's exponent range, so no gradient scaler is needed).

Nothing here reads a device value on the host: the metrics, the gradient norm and the decision
to skip a step stay device tensors (read once per log interval by the loop), so the host can
queue the next step's kernels while this one runs. The skip decision works like
``torch.amp.GradScaler``'s found-inf tensor, without its host read:

* a micro-batch whose loss is NaN / Inf back-propagates a NaN upstream gradient, so every
  gradient it reaches becomes NaN; DDP's gradient all-reduce then carries that NaN to every
  process, so every process sees the same non-finite global gradient norm without a separate
  collective for the flag;
* ``ok = isfinite(global gradient norm)`` (this also catches a finite loss with an overflowing
  gradient);
* the optimiser's update is made conditional on ``ok`` on the device: the project's optimisers
  (``optim.MaskedSGD``, ``lars.LARS``) take ``step(ok=...)`` and turn a skipped step into a
  no-op in the same kernels; any other optimiser steps unconditionally and every tensor it
  changed (parameters and its state tensors) is put back with ``torch.where(ok, new, old)``
  from a snapshot. Either way a skipped step changes no weight and no optimiser state, exactly
  as if it had not run.

An optimiser whose state is created lazily in its first step (``torch.optim.SGD`` built by
hand) cannot have that creation undone on the device; for such a step the flag is read on the
host, once. ``engine.optim.build_optimizer`` creates the state up front (zero momentum buffers,
which give the same first step), so training never takes that path.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
from torch import nn

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


@dataclass
class StepResult:
    """What one step returns; every field is a device tensor (no host read has happened).

    Attributes:
        metrics: the model's output dict (every key a 0-dim tensor), each averaged over the
            micro-batches, float64.
        ok: 0-dim bool, False when the step was skipped (non-finite loss or gradient).
        grad_norm: 0-dim global gradient norm before clipping (None when clipping is off).
    """

    metrics: dict[str, torch.Tensor]
    ok: torch.Tensor
    grad_norm: torch.Tensor | None = None

    @property
    def skipped(self) -> bool:
        """Whether the step was skipped; reads ``ok`` on the host (tests, one-off callers)."""
        return not bool(self.ok)


class TrainStep:
    """Callable running one optimiser step over a list of micro-batches (dicts of model kwargs).

    Args:
        model: the (possibly DDP-wrapped or compiled) model returning a dict of 0-dim tensors
            with ``loss``; every key is carried as a metric.
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

    def __call__(self, micro_batches: list[dict[str, torch.Tensor]], lr: float) -> StepResult:
        """One step at schedule rate ``lr`` (each group runs at ``lr * group["lr_scale"]``)."""
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        n = len(micro_batches)
        keys: list[str] = []
        total: torch.Tensor | None = None
        for i, batch in enumerate(micro_batches):
            no_sync = getattr(self.model, "no_sync", None)
            with no_sync() if (no_sync is not None and i < n - 1) else nullcontext():
                with self.autocast():
                    out = self.model(**batch)
                loss = out["loss"]
                # 1/n (the mean over micro-batches), or NaN for a non-finite loss: every
                # gradient it reaches turns NaN, so the gradient norm below flags the step
                scale = torch.where(torch.isfinite(loss.detach()), 1.0 / n, float("nan"))
                (loss * scale).backward()
            keys = keys or list(out)
            values = torch.stack([out[k].detach().float() for k in keys]).double() / n
            total = values if total is None else total + values
        params = [p for g in self.optimizer.param_groups for p in g["params"]
                  if p.grad is not None]
        if self.clip_grad_norm > 0:
            norm = nn.utils.clip_grad_norm_(params, self.clip_grad_norm)
        else:
            norm = nn.utils.get_total_norm([p.grad for p in params])
        ok = torch.isfinite(norm)
        self._guarded_update(params, ok)
        metrics = dict(zip(keys, total.unbind(), strict=True)) if total is not None else {}
        return StepResult(metrics, ok, norm if self.clip_grad_norm > 0 else None)

    @torch.no_grad()
    def _guarded_update(self, params: list[torch.Tensor], ok: torch.Tensor) -> None:
        """``optimizer.step()`` that changes nothing unless ``ok``, decided on the device."""
        state = self.optimizer.state
        if any(p not in state or not state[p] for p in params):  # state would be created now
            if bool(ok):  # a host read, only in an optimiser's first step (see module doc)
                self.optimizer.step()
            return
        if getattr(self.optimizer, "supports_ok_mask", False):
            self.optimizer.step(ok=ok)
            return
        entries = [(state[p], key) for p in params for key, value in state[p].items()
                   if isinstance(value, torch.Tensor)]
        before = [holder[key] for holder, key in entries]
        saved_params = torch._foreach_add(params, 0)  # copies (foreach: few kernels on GPU)
        saved_state = torch._foreach_add(before, 0) if before else []
        self.optimizer.step()
        for p, old in zip(params, saved_params, strict=True):
            torch.where(ok, p, old, out=p)
        for (holder, key), tensor, old in zip(entries, before, saved_state, strict=True):
            if holder[key] is tensor:  # updated in place (SGD, LARS)
                torch.where(ok, tensor, old, out=tensor)
            else:  # replaced by the optimiser
                holder[key] = torch.where(ok, holder[key], old)


class SkipGuard:
    """Device-side counters of skipped steps, read by the training loop with its metrics.

    ``in_row``: the current run of consecutive skipped steps; ``skipped``: skipped steps since
    the last :meth:`new_interval`; ``last``: the last skipped step (0: none); ``limit_step``:
    the step at which ``in_row`` first reached ``limit`` (0: not yet), after which the loop
    stops the run at its next read.
    """

    KEYS = ("in_row", "skipped", "last", "limit_step")

    def __init__(self, limit: int, device: torch.device) -> None:
        self.limit = limit
        self.values = dict.fromkeys(self.KEYS, torch.zeros((), dtype=torch.int64, device=device))

    def add(self, ok: torch.Tensor, step: int) -> None:
        """Count step ``step`` (1-based), applied when ``ok``."""
        v, bad = self.values, (~ok).long()
        v["in_row"] = (v["in_row"] + 1) * bad
        v["skipped"] = v["skipped"] + bad
        v["last"] = torch.where(ok, v["last"], step)
        v["limit_step"] = torch.where((v["limit_step"] == 0) & (v["in_row"] >= self.limit),
                                      step, v["limit_step"])

    def new_interval(self) -> None:
        self.values["skipped"] = torch.zeros_like(self.values["skipped"])
