"""ConST-CL pretraining: :func:`pretrain` runs one configured job (``constcl pretrain``).

Reads top to bottom: set-up, preparing data, building the network, optimiser, resume, train loop,
export. Works as is under ``torchrun --nproc_per_node=N -m constcl pretrain ...``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from constcl import dist
from constcl.config import Config, ConfigError, save_config, to_dict
from constcl.data.augment import PhotometricAugment
from constcl.data.dataset import TwoViewDataset
from constcl.engine import checkpoint as ckpt
from constcl.engine import resume as resuming
from constcl.engine.data import (
    build_loader,
    device_batches,
    resolve_num_classes,
    training_videos,
)
from constcl.engine.export import export_backbone
from constcl.engine.init_from import load_init_weights
from constcl.engine.logger import MetricWindow, RankFilter, RunLogger, read_on_host
from constcl.engine.monitor import UpdateMonitor
from constcl.engine.optim import auto_local_lr_scale, build_optimizer
from constcl.engine.step import SkipGuard, StepResult, TrainStep
from constcl.errors import ConstclError
from constcl.models import LossWeights, build_model
from constcl.models.constcl import ConSTCL
from constcl.runlock import run_lock
from constcl.schedule import scaled_lr, warmup_cosine

log = logging.getLogger("constcl.train")


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


# ----------------------------------------------------------------------------------- set-up

def git_sha() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use auto or cpu")
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda", dist.local_rank())


def run_folder(cfg: Config) -> Path:
    """The run folder, agreed on by all processes (rank 0 picks a time-stamped name)."""
    name = cfg.train.run_name or time.strftime("%Y%m%d-%H%M%S")
    if dist.world_size() > 1:
        holder = [name]
        torch.distributed.broadcast_object_list(holder, src=0)
        name = holder[0]
    return Path(cfg.train.out_dir).expanduser() / name


def cpu_threads(cfg: Config) -> int:
    """Threads for CPU training: the configured number, else the cores this process may use
    (divided among local processes) minus the data workers, at least 1."""
    if cfg.train.cpu_threads:
        return cfg.train.cpu_threads
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, (cores or 1) // local - cfg.data.workers)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of all parameters (to show that processes ended identical).

    Buffers are left out: without SyncBN each process's BN running statistics see only its own
    last batch (DDP re-broadcasts rank 0's at every forward, and rank 0's are saved)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


# --------------------------------------------------------------------------- the network

def model_from_config(cfg: Config) -> ConSTCL:
    """The network ``cfg`` describes, freshly initialised (no ``model.init_from``), on CPU."""
    m = cfg.model
    return build_model(m.backbone, variant=m.variant, local_source=m.local_source,
                       context_length=m.context_length, zero_init_residual=m.zero_init_residual,
                       losses=LossWeights(**vars(cfg.loss)), input_norm=m.input_norm,
                       padding=m.padding, embed_dim=m.embed_dim,
                       decoder_layers=m.decoder_layers, decoder_units=m.decoder_units,
                       decoder_width=m.decoder_width, num_classes=m.num_classes)


def build_network(cfg: Config, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(model to train, possibly DDP / compiled; the plain model for saving)."""
    m = cfg.model
    model = model_from_config(cfg)
    if m.init_from:  # trunk + both res5 copies; heads stay random (engine/init_from.py)
        load_init_weights(model, m.init_from, m.backbone, m.input_norm, m.padding)
    if m.sync_bn and dist.world_size() > 1:
        if device.type != "cuda":
            raise ConfigError("model.sync_bn=true needs CUDA devices (PyTorch's SyncBatchNorm "
                              "is GPU-only); set model.sync_bn=false for multi-process CPU runs")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    if device.type == "cuda" and cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    plain = model
    if dist.world_size() > 1:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.train.compile:
        model = torch.compile(model)
    return model, plain


# ---------------------------------------------------------------------------- pretraining

def pretrain(cfg: Config) -> Path:
    """Run (or resume) a pretraining run; returns the run folder.

    Writes ``config.yaml``, ``git_sha.txt``, ``metrics.jsonl``, TensorBoard events,
    ``checkpoints/``, ``backbone.safetensors``, ``summary.json`` and (after resumes with allowed
    config changes) ``config_history.jsonl`` into the run folder. A resume that would mix two
    runs is refused before anything is written (:func:`prepare_run_folder`); NaN / Inf weights
    stop the run (:class:`NonFiniteWeights`) without a checkpoint or an export. Under
    torchrun it joins the process group first and, if it created the group, leaves it at the
    end.
    """
    joined = not dist.is_initialized() and dist.init_from_env()
    try:
        run_dir = run_folder(cfg)  # a collective under torchrun: every rank calls it
        # one process per run folder (rank 0 holds it for the whole group): runlock.py
        with run_lock(run_dir, "constcl pretrain") if dist.is_main() \
                else contextlib.nullcontext():
            _pretrain(cfg, run_dir)
    except BaseException:
        if joined:  # no barrier: the other ranks may never reach it
            dist.shutdown(wait=False)
        raise
    if joined:
        dist.shutdown()
    return run_dir


def _pretrain(cfg: Config, run_dir: Path) -> Path:
    """:func:`pretrain` inside the process group (or without one), in ``run_dir``."""
    # ---- set-up
    _quiet_other_ranks()
    device = setup_device(cfg)
    seed_everything(cfg.train.seed + dist.rank(), cfg.train.deterministic)
    videos = training_videos(cfg)  # data errors stop the run before its folder is touched
    if cfg.model.variant == "supervised":
        resolve_num_classes(cfg, videos)
    start_step, state = prepare_run_folder(cfg, run_dir)  # checks the resume, then writes
    global_batch = _log_setup(cfg, device, run_dir)

    # ---- preparing data
    loader, dataset, augment = build_loader(cfg, videos, device, start_step, run_dir)
    log.info("data: %d videos, %d steps per epoch", len(dataset),
             loader.batch_sampler.steps_per_epoch)

    # ---- building the network, optimiser and schedule
    model, plain = build_network(cfg, device)
    log.info("model %s / %s / %s: %.2f M parameters", cfg.model.backbone, cfg.model.variant,
             cfg.model.local_source, sum(p.numel() for p in plain.parameters()) / 1e6)
    optimizer, lrs = build_optimizer_and_schedule(cfg, plain, global_batch)
    stepper = TrainStep(model, optimizer, cfg.train.precision, device.type,
                        cfg.optim.clip_grad_norm)

    # ---- resume
    if state is not None:
        plain.load_state_dict(state["model"])
        load_optimizer_state(optimizer, state["optimizer"])
        ckpt.set_rng_state(state["rng"])  # a "scaler" entry of older checkpoints is ignored

    def save(step: int) -> None:
        check_finite_weights(plain, step)  # never checkpoint broken weights
        save_training_state(cfg, run_dir, step, plain, optimizer)

    # ---- train loop
    logger = RunLogger(run_dir, cfg.train.steps, start_step, cfg.train.progress, dist.is_main())
    parts = LoopParts(model=model, stepper=stepper, loader=loader, augment=augment,
                      device=device, lrs=lrs, logger=logger, save=save, dataset=dataset,
                      monitor=UpdateMonitor(plain), weights=plain)
    step = train_loop(cfg, parts, start_step)
    save(step)  # checks the weights for NaN / Inf first, so nothing non-finite is exported

    # ---- export
    export_run(cfg, run_dir, plain, step, global_batch, dataset, logger)
    logger.close()
    return run_dir


def _quiet_other_ranks() -> None:
    """Only rank 0 logs: other ranks filter every record of the root logger and its handlers."""
    if dist.is_main():
        return
    logging.getLogger().addFilter(RankFilter(dist.rank()))
    for handler in logging.getLogger().handlers:
        handler.addFilter(RankFilter(dist.rank()))


def setup_device(cfg: Config) -> torch.device:
    """The training device; on CPU also the thread count, and bf16 becomes fp32 (CPU bf16
    autocast is much slower than fp32 here), which ``cfg.train.precision`` then records."""
    device = pick_device(cfg.train.device)
    if device.type == "cpu":
        if cfg.train.precision == "bf16":
            log.info("precision bf16 is not used on CPU (slower than fp32 there); "
                     "training in fp32")
            cfg.train.precision = "fp32"
        torch.set_num_threads(cpu_threads(cfg))
    return device


def prepare_run_folder(cfg: Config, run_dir: Path) -> tuple[int, dict[str, Any] | None]:
    """(step to start from, checkpoint to resume from or None), after the checks that keep a
    run folder to one run; only then does rank 0 create the folder and write ``config.yaml``
    and ``git_sha.txt``.

    Nothing is written when the checks fail: a checkpoint whose config differs from ``cfg``
    (see :func:`resume.check_resume_config`), or ``train.resume=auto`` without a loadable
    checkpoint in a folder that holds a previous run's outputs. On resume, the allowed config
    changes go to ``config_history.jsonl`` and ``metrics.jsonl`` loses its lines after the
    resumed step; ``train.resume=none`` / ``restart`` move a previous run's outputs aside.
    """
    start_step, state, source = resume_state(cfg, run_dir)
    changes: dict[str, Any] = {}
    found = resuming.previous_outputs(run_dir) if state is None else []
    if state is not None:
        changes = resuming.check_resume_config(cfg, state, source)
    elif cfg.train.resume == "auto":
        blocking = resuming.previous_outputs(run_dir, resuming.BLOCKING_OUTPUTS)
        if blocking:
            raise resuming.refuse_to_start_over(run_dir, blocking)
    if dist.is_main():
        run_dir.mkdir(parents=True, exist_ok=True)
        if found:
            moved = resuming.move_aside(run_dir, found)
            log.warning("train.resume=%s: moved the previous run's outputs to %s",
                        cfg.train.resume, moved)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "git_sha.txt").write_text(git_sha() + "\n")
        if state is not None:
            dropped = resuming.truncate_metrics(run_dir, start_step)
            if dropped:
                log.info("metrics.jsonl: dropped %d line(s) after step %d", dropped, start_step)
            if changes:
                resuming.append_config_history(run_dir, start_step, changes)
    if dist.world_size() > 1:
        torch.distributed.barrier()
    if state is not None:
        log.info("resuming from step %d (checkpoint %s)", start_step, source)
    else:
        log.info("starting a new run in %s", run_dir)
    return start_step, state


def _log_setup(cfg: Config, device: torch.device, run_dir: Path) -> int:
    """Log run folder, device, precision and batch arithmetic; returns the global batch."""
    world, accum = dist.world_size(), cfg.optim.accumulation_steps
    global_batch = cfg.train.batch_size * world * accum
    log.info("run folder %s (git %s)", run_dir, git_sha()[:12])
    if device.type == "cpu":
        log.info("CPU threads per process: %d (train.cpu_threads)", torch.get_num_threads())
    log.info("device %s, precision %s; %d videos per process x %d processes x %d accumulation "
             "= global batch %d", device, cfg.train.precision, cfg.train.batch_size, world, accum,
             global_batch)
    return global_batch


def resume_state(cfg: Config, run_dir: Path) -> tuple[int, dict[str, Any] | None, str]:
    """(step to start from, checkpoint to resume from or None, its path or '') as
    ``train.resume`` says."""
    if cfg.train.resume == "auto":
        found = ckpt.latest_loadable(run_dir)
        if found is None:
            return 0, None, ""
        return found[1]["step"], found[1], str(found[0])
    if cfg.train.resume not in ("none", "restart"):
        state = ckpt.load_checkpoint(cfg.train.resume)
        return state["step"], state, str(cfg.train.resume)
    return 0, None, ""


def build_optimizer_and_schedule(cfg: Config, plain: nn.Module, global_batch: int
                                 ) -> tuple[torch.optim.Optimizer, np.ndarray]:
    """The optimiser of ``plain`` and the learning rate of every step (``train.steps`` values:
    linear scaling by the global batch, warm-up, cosine)."""
    peak_lr = scaled_lr(cfg.optim.base_lr, global_batch)
    lrs = warmup_cosine(peak_lr, cfg.train.steps, cfg.optim.warmup_steps,
                        cfg.optim.final_lr_fraction * peak_lr)
    log.info("lr = base_lr %.4g x %d / 256 = %.4g (warm-up %d steps, cosine to %.3g)",
             cfg.optim.base_lr, global_batch, peak_lr, cfg.optim.warmup_steps, lrs[-1])
    local_scale = cfg.optim.local_lr_scale or auto_local_lr_scale(cfg.loss.region_weight)
    optimizer = build_optimizer(plain, cfg.optim.name, peak_lr, cfg.optim.momentum,
                                cfg.optim.weight_decay, cfg.optim.lars_eta, local_scale)
    if plain.region_head is not None:
        log.info("region-only parameters (local res5 copy, region head): lr x %.4g "
                 "(optim.local_lr_scale%s)", local_scale,
                 " = auto = 1 / loss.region_weight" if not cfg.optim.local_lr_scale else "")
    return optimizer, lrs


def load_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Restore the optimiser's state (momentum buffers) from a checkpoint but keep the
    hyper-parameters of its groups as this config built them (``load_state_dict`` would bring
    back the checkpoint's lr scale, momentum and weight decay, silently undoing changes allowed
    by ``train.resume_allow_changes``; unchanged configs give the same values)."""
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, values in zip(optimizer.param_groups, configured, strict=True):
        group.update(values)


def save_training_state(cfg: Config, run_dir: Path, step: int, plain: nn.Module,
                        optimizer: torch.optim.Optimizer) -> None:
    """Checkpoint of ``step`` (model, optimiser, RNG state, config) on rank 0; all ranks wait."""
    if dist.is_main():
        ckpt.save_checkpoint({"step": step, "model": plain.state_dict(),
                              "optimizer": optimizer.state_dict(),
                              "rng": ckpt.rng_state(),
                              "config": json.dumps(to_dict(cfg))},
                             run_dir, step, cfg.train.keep_checkpoints)
    if dist.world_size() > 1:
        torch.distributed.barrier()


def export_run(cfg: Config, run_dir: Path, plain: nn.Module, step: int, global_batch: int,
               dataset: TwoViewDataset, logger: RunLogger) -> None:
    """Write ``backbone.safetensors`` and ``summary.json`` (with every process's weights
    fingerprint) on rank 0."""
    fingerprints = [weights_fingerprint(plain)]
    if dist.world_size() > 1:
        fingerprints = [None] * dist.world_size()
        torch.distributed.all_gather_object(fingerprints, weights_fingerprint(plain))
    if dist.is_main():
        export_backbone(plain, run_dir / "backbone.safetensors", to_dict(cfg))
        ckpt.kill_on_fault("kill_during_export", step)
        summary = {"steps": step, "world_size": dist.world_size(), "global_batch": global_batch,
                   "weights_fingerprints": fingerprints, "bad_videos": dataset.bad_files()}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        logger.message(f"done: {step} steps; backbone in {run_dir / 'backbone.safetensors'}")


# ---------------------------------------------------------------------------- train loop

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
