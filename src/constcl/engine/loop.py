"""The pretraining loop (:func:`train_loop`): steps, the log interval's one host read, the
non-finite guard's stop, checkpoints and the time limit."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from constcl import dist
from constcl.config import Config
from constcl.data.augment import PhotometricAugment
from constcl.data.dataset import TwoViewDataset
from constcl.engine import checkpoint as ckpt
from constcl.engine.data import device_batches
from constcl.engine.logger import MetricWindow, RunLogger, read_on_host
from constcl.engine.monitor import UpdateMonitor
from constcl.engine.step import SkipGuard, StepResult, TrainStep
from constcl.errors import ConstclError


class TooManyBadSteps(ConstclError, RuntimeError):
    """Too many consecutive steps had a NaN or Inf loss."""


class NonFiniteWeights(ConstclError, RuntimeError):
    """A parameter holds NaN or Inf; the run stops without a checkpoint or an export."""

def check_finite_weights(model: nn.Module, step: int) -> None:
    """Raise NonFiniteWeights naming the parameters of ``model`` that hold NaN or Inf."""
    named = list(model.named_parameters())
    if not named:
        return
    with torch.no_grad():  # one device sync for the common, all-finite case
        finite = torch.stack([torch.isfinite(p).all() for _, p in named])
    if bool(finite.all()):
        return
    bad = [name for (name, _), ok in zip(named, finite.tolist(), strict=True) if not ok]
    shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
    raise NonFiniteWeights(
        f"step {step}: {len(bad)} parameter tensor(s) hold NaN/Inf ({shown}); stopping "
        f"without saving or exporting (the last checkpoint is the last good state). Lower "
        f"optim.base_lr, set optim.clip_grad_norm, or use train.precision=fp32")

@dataclass
class LoopParts:
    """What :func:`train_loop` runs on.

    Attributes:
        model: the model to train (possibly DDP-wrapped or compiled).
        stepper: one optimiser step over a list of micro-batches.
        loader: micro-batches of this process from the start step on.
        augment: photometric augmentations of views a and b (applied on ``device``).
        device: where the batches go.
        lrs: learning rate of every step, ``(train.steps,)``.
        logger: metrics.jsonl / TensorBoard / progress.
        save: writes the checkpoint of a step.
        dataset: the data set (for its count of bad videos).
        monitor: on logged steps, measures each part's relative update size (None: off).
        weights: the plain model, whose parameters are checked for NaN / Inf on logged steps
            (None: off).
    """

    model: nn.Module
    stepper: TrainStep
    loader: DataLoader
    augment: tuple[PhotometricAugment, ...]
    device: torch.device
    lrs: np.ndarray
    logger: RunLogger
    save: Callable[[int], None]
    dataset: TwoViewDataset
    monitor: UpdateMonitor | None = None
    weights: nn.Module | None = None


def train_loop(cfg: Config, parts: LoopParts, start_step: int) -> int:
    """Steps from start_step to cfg.train.steps; returns the step reached.

    No step waits for the device: the metrics, the skip decision of the non-finite guard
    (``engine.step``) and its counters stay device tensors, read on the host together once per
    log interval (:func:`_log_interval`), and once before a checkpoint that falls between log
    steps (so no checkpoint follows ``train.max_bad_steps`` skipped steps in a row).
    """
    model, stepper, device, lrs = parts.model, parts.stepper, parts.device, parts.lrs
    model.train()
    accum, step, unread = cfg.optim.accumulation_steps, start_step, False
    window, guard = MetricWindow(), SkipGuard(cfg.train.max_bad_steps, device)
    interval = _Interval()
    began = time.time()
    batches = device_batches(parts.loader, device, parts.augment, cfg, start_step)
    while step < cfg.train.steps:
        t0 = time.time()
        micro = [next(batches) for _ in range(accum)]
        interval.wait += time.time() - t0
        logs_now = (step + 1) % cfg.train.log_every == 0 or step + 1 == cfg.train.steps
        if parts.monitor is not None and logs_now:
            parts.monitor.before()
        result = stepper(micro, float(lrs[step]))
        step, unread = step + 1, True
        interval.steps += 1
        window.add(result.metrics, result.ok)
        guard.add(result.ok, step)
        if parts.weights is not None and ckpt.fault("corrupt_weights", step):
            first = next(parts.weights.parameters())
            with torch.no_grad():
                first[(0,) * first.dim()] = float("nan")
        parts.logger.update(step)
        if logs_now:
            _log_interval(cfg, parts, step, window.means(), guard, result, interval)
            interval, unread = _Interval(), False
            ckpt.kill_on_fault("kill_at_step", step)
        if step % cfg.train.checkpoint_every == 0 and step < cfg.train.steps:
            if unread:
                _check_skips(cfg, guard, read_on_host(guard.values), step)
                unread = False
            parts.save(step)
        limit = cfg.train.time_limit_minutes
        if limit and time.time() - began > 60 * limit:
            parts.logger.message(f"time limit of {limit} minutes reached at step {step}")
            break
    if unread:  # the final checkpoint follows: stop first if the guard says so
        _check_skips(cfg, guard, read_on_host(guard.values), step)
    return step


@dataclass
class _Interval:
    """Host-side timing of the current log interval (no device synchronisation per step)."""

    steps: int = 0
    wait: float = 0.0
    since: float = field(default_factory=time.time)


def _log_interval(cfg: Config, parts: LoopParts, step: int, means: dict[str, torch.Tensor],
                  guard: SkipGuard, result: StepResult, interval: _Interval) -> None:
    """The interval's one host read (metrics, update ratios, guard counters, weight check),
    then its checks and its line in ``metrics.jsonl``."""
    ratios = parts.monitor.measure() if parts.monitor is not None else {}
    finite = weights_finite(parts.weights) if parts.weights is not None else None
    read = read_on_host({**means, "grad_norm": result.grad_norm, **ratios,
                         **{f"guard_{k}": v for k, v in guard.values.items()},
                         "weights_finite": finite})
    elapsed = max(time.time() - interval.since, 1e-9)
    if finite is not None and not read.pop("weights_finite", 0.0):
        check_finite_weights(parts.weights, step)  # raises, naming the tensors
    counts = {k: int(read.pop(f"guard_{k}")) for k in guard.values}
    if counts["skipped"]:
        parts.logger.message(
            f"step {step}: {counts['skipped']} of the last {interval.steps} steps skipped for a "
            f"NaN/Inf loss or gradient (the last at step {counts['last']}; "
            f"{counts['in_row']} in a row now)")
    _check_skips(cfg, guard, counts, step)
    guard.new_interval()
    clips = 2 * cfg.train.batch_size * cfg.optim.accumulation_steps * dist.world_size()
    metrics = {k: read[k] for k in sorted(means) if k in read}
    metrics.update(lr=float(parts.lrs[step - 1]), clips_per_s=clips * interval.steps / elapsed,
                   data_wait_share=min(interval.wait / elapsed, 1.0),
                   bad_videos=float(parts.dataset.num_bad()))
    metrics.update({k: v for k, v in read.items() if k not in metrics})  # grad_norm, ratios
    parts.logger.log(step, metrics)


def _check_skips(cfg: Config, guard: SkipGuard, read: dict[str, float], step: int) -> None:
    """Raise TooManyBadSteps when the guard's counters (``guard.values`` as read on the host)
    show that the limit was reached."""
    limit_step = int(read["limit_step"])
    if limit_step:
        raise TooManyBadSteps(
            f"{guard.limit} consecutive steps had a NaN/Inf loss or gradient (the last of them "
            f"at step {limit_step}, noticed at step {step}); lower optim.base_lr, set "
            f"optim.clip_grad_norm, or use train.precision=fp32")


def weights_finite(model: nn.Module) -> torch.Tensor:
    """0-dim bool device tensor: every parameter of ``model`` is finite (no host read)."""
    with torch.no_grad():
        return torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
