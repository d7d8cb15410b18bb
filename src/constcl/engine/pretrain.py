"""ConST-CL pretraining: :func:`pretrain` runs one configured job (``constcl pretrain``).

Reads top to bottom, in MAE's shape: :func:`_pretrain` is the whole job (set-up, data, network,
optimiser, resume, loop, export); the set-up steps are in ``engine.setup``, the loop in
``engine.loop``, the network a config describes in ``constcl.network``. Works as is under
``torchrun --nproc_per_node=N -m constcl pretrain ...``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from pathlib import Path

import torch
from torch import nn

from constcl import dist
from constcl.config import Config, to_dict
from constcl.data.dataset import TwoViewDataset
from constcl.engine import checkpoint as ckpt
from constcl.engine.data import build_loader, resolve_num_classes, training_videos
from constcl.engine.export import export_backbone
from constcl.engine.logger import RunLogger
from constcl.engine.loop import LoopParts, check_finite_weights, train_loop
from constcl.engine.monitor import UpdateMonitor
from constcl.engine.setup import (
    build_network,
    build_optimizer_and_schedule,
    load_optimizer_state,
    log_setup,
    prepare_run_folder,
    quiet_other_ranks,
    run_folder,
    seed_everything,
    setup_device,
)
from constcl.engine.step import TrainStep
from constcl.runlock import run_lock

log = logging.getLogger("constcl.train")


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
    quiet_other_ranks()
    device = setup_device(cfg)
    seed_everything(cfg.train.seed + dist.rank(), cfg.train.deterministic)
    videos = training_videos(cfg)  # data errors stop the run before its folder is touched
    if cfg.model.variant == "supervised":
        resolve_num_classes(cfg, videos)
    start_step, state = prepare_run_folder(cfg, run_dir)  # checks the resume, then writes
    global_batch = log_setup(cfg, device, run_dir)

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

def weights_fingerprint(model: nn.Module) -> str:
    """SHA-256 of all parameters (to show that processes ended identical).

    Buffers are left out: without SyncBN each process's BN running statistics see only its own
    last batch (DDP re-broadcasts rank 0's at every forward, and rank 0's are saved)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy())
    return digest.hexdigest()
