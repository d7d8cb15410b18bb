"""Setting up a pretraining run: device and threads, seeds, the run folder and its resume
checks, the network on its device (DDP, SyncBN, compile) and the optimiser with its schedule.

Each function does one step of :func:`constcl.engine.pretrain._pretrain`'s set-up, in that order.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from constcl import dist
from constcl.config import Config, ConfigError, save_config
from constcl.engine import checkpoint as ckpt
from constcl.engine import resume as resuming
from constcl.engine.init_from import load_init_weights
from constcl.engine.logger import RankFilter
from constcl.engine.optim import auto_local_lr_scale, build_optimizer
from constcl.network import model_from_config
from constcl.schedule import scaled_lr, warmup_cosine

log = logging.getLogger("constcl.train")


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


def quiet_other_ranks() -> None:
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


def log_setup(cfg: Config, device: torch.device, run_dir: Path) -> int:
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
