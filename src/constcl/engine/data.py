"""Training input: data set, step sampler and loader, and device-side augmentation."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from constcl import dist
from constcl.config import Config, ConfigError, DataConfig
from constcl.data.augment import PhotometricAugment
from constcl.data.dataset import TwoViewDataset, ViewSettings, collate
from constcl.data.sampling import ClipSpec
from constcl.data.shards import (
    ShardBatchSampler,
    ShardList,
    ShardTwoViewDataset,
    is_shard_source,
    list_shards,
)
from constcl.data.sources import VideoItem, list_videos
from constcl.engine.sampler import EpochIndexed, StepBatchSampler

log = logging.getLogger("constcl.train")

MODEL_KEYS = ("view_a", "view_b", "boxes_a", "boxes_b", "mask_a", "mask_b")
SUPERVISED_KEYS = {"labels": "label"}  # model kwarg -> sample key, variant=supervised only

# data.decoder=auto: the decoder measured fastest per source kind (bench/data_throughput.py,
# BENCHMARKS.md "Data throughput").
AUTO_DECODER = {"files": "pyav", "shards": "pyav"}


def decoder_name(data: DataConfig) -> str:
    """The decoding backend of ``data`` (``data.decoder``, with ``auto`` resolved per source
    kind)."""
    if data.decoder != "auto":
        return data.decoder
    return AUTO_DECODER["shards" if is_shard_source(data.source) else "files"]


def synthetic_world_dir(data: DataConfig) -> Path:
    """Root folder of the synthetic world that ``data`` trains on (with ``data.source =
    'synthetic'``): ``synth_dir / n{synth_videos}-s{synth_size}``; its videos are in ``videos/``.
    """
    return Path(data.synth_dir).expanduser() / f"n{data.synth_videos}-s{data.synth_size}"


def synthetic_source(cfg: Config) -> Path:
    """Folder of the built-in synthetic world's videos, generated on first use (by rank 0)."""
    from constcl.data.synth import generate_world

    d = cfg.data
    root = synthetic_world_dir(d)
    if dist.is_main():
        log.info("synthetic world in %s (generated on first use)", root)
        generate_world(root, num_videos=d.synth_videos, seed=0, size=d.synth_size)
    if dist.world_size() > 1:
        torch.distributed.barrier()
    return root / "videos"


def training_videos(cfg: Config) -> list[VideoItem] | ShardList:
    """The training videos of ``cfg.data`` (the synthetic world is generated on first use), or
    its shards when ``data.source`` is a shard source (``constcl.data.shards``).

    Raises before anything is trained or written into a run folder: FileNotFoundError when the
    source holds no video, ConfigError when ``data.region_generator=detections`` finds no box
    file (:func:`check_box_coverage`).
    """
    d = cfg.data
    if d.source != "synthetic" and is_shard_source(d.source):
        if d.region_generator == "detections":
            raise ConfigError("data.region_generator=detections needs box files, which shard "
                              "sources do not carry; use random or cues, or the prepared files")
        shards = list_shards(d.source)
        readers = dist.world_size() * max(1, d.workers)
        if len(shards) < readers:
            raise ConfigError(f"data.source has {len(shards)} shards, but {dist.world_size()} "
                              f"processes x {max(1, d.workers)} data.workers need one each at "
                              f"least; write more shards (constcl data prepare --shards "
                              f"{readers}) or lower data.workers")
        return shards
    source = synthetic_source(cfg) if d.source == "synthetic" else Path(d.source).expanduser()
    items = list_videos(source, root=d.root or None, boxes_dir=d.boxes_dir or None)
    if d.source == "synthetic" and cfg.model.variant == "supervised":
        items = synthetic_train_split(source.parent, items)
    if not items:
        raise FileNotFoundError(f"no videos found in data.source={str(source)!r}")
    if d.region_generator == "detections":
        check_box_coverage(items, d.boxes_dir)
    return items


def synthetic_train_split(world: Path, items: list[VideoItem]) -> list[VideoItem]:
    """The items of the synthetic world's training split (``videos.csv`` split column): the
    supervised reference must never see the labels of the videos the evaluation tests on."""
    from constcl.data.synth import split_videos

    train = {(world / r["path"]).resolve() for r in split_videos(world, "train")}
    return [item for item in items if item.path.resolve() in train]


def resolve_num_classes(cfg: Config, items: list[VideoItem] | ShardList) -> None:
    """Set ``cfg.model.num_classes`` of ``model.variant=supervised`` from the training labels
    (when 0), after checking that every video has a label in range."""
    if not isinstance(items, list):
        raise ConfigError("model.variant=supervised needs labelled videos from a folder or CSV "
                          "source; shard sources carry no labels")
    unlabelled = [str(item.path) for item in items if item.label is None]
    if unlabelled:
        raise ConfigError(f"model.variant=supervised needs a label for every training video; "
                          f"{len(unlabelled)} of {len(items)} have none (first: "
                          f"{unlabelled[0]}); use a folder with one sub-folder per class or a "
                          f"CSV with a label column")
    found = max(int(item.label) for item in items) + 1
    if cfg.model.num_classes == 0:
        cfg.model.num_classes = found
    elif found > cfg.model.num_classes:
        raise ConfigError(f"model.num_classes={cfg.model.num_classes}, but the training "
                          f"source has label {found - 1}")
    log.info("supervised reference: %d classes, %d labelled training videos",
             cfg.model.num_classes, len(items))


def build_dataset(cfg: Config, items: list[VideoItem] | None = None,
                  bad_dir: Path | None = None) -> TwoViewDataset:
    """Two-view dataset over ``items`` (default: :func:`training_videos`)."""
    d = cfg.data
    items = training_videos(cfg) if items is None else items
    return TwoViewDataset(items, clip_frames=d.clip_frames, frame_stride=d.frame_stride,
                          size=d.size, num_regions=d.num_regions,
                          region_generator=d.region_generator, short_side=d.short_side or None,
                          max_bad_fraction=d.max_bad_fraction, seed=cfg.train.seed,
                          bad_dir=bad_dir, decoder=decoder_name(d))


def check_box_coverage(items: list[VideoItem], boxes_dir: str) -> None:
    """For ``data.region_generator=detections``: raise ConfigError when no training video has
    a box file, log a WARNING when only some have one (the others get no regions)."""
    with_boxes = sum(item.boxes_path is not None for item in items)
    if with_boxes == len(items):
        return
    where = (f"{boxes_dir}/<video stem>.csv (data.boxes_dir)" if boxes_dir
             else "<video stem>.boxes.csv next to each video (data.boxes_dir is empty)")
    if with_boxes == 0:
        raise ConfigError(f"data.region_generator=detections, but 0 of {len(items)} training "
                          f"videos have a box file; boxes are looked for in {where}. Write the "
                          f"box files, set data.boxes_dir, or choose data.region_generator="
                          f"random or cues")
    log.warning("data.region_generator=detections: only %d of %d training videos have a box "
                "file (looked for in %s); the others have no regions", with_boxes, len(items),
                where)


def build_shard_dataset(cfg: Config, shards: ShardList, bad_dir: Path) -> ShardTwoViewDataset:
    """The streaming two-view dataset of a shard source, for this process's rank."""
    d = cfg.data
    views = ViewSettings(ClipSpec(d.clip_frames, d.frame_stride), d.size, d.num_regions,
                         d.region_generator, d.short_side or None, decoder_name(d))
    return ShardTwoViewDataset(shards, views, rank=dist.rank(), world=dist.world_size(),
                               streams=max(1, d.workers), buffer=d.shuffle_buffer,
                               seed=cfg.train.seed, bad_dir=bad_dir,
                               max_bad_fraction=d.max_bad_fraction)


def build_loader(cfg: Config, items: list[VideoItem] | ShardList, device: torch.device,
                 start_step: int, run_dir: Path
                 ) -> tuple[DataLoader, TwoViewDataset | ShardTwoViewDataset,
                            tuple[PhotometricAugment, ...]]:
    """DataLoader over this process's micro-batches of ``items`` (videos or shards) from
    ``start_step`` on, plus the batched photometric augmentations of views a and b (applied on
    ``device``)."""
    accum, batch = cfg.optim.accumulation_steps, cfg.train.batch_size
    if isinstance(items, ShardList):
        dataset = build_shard_dataset(cfg, items, run_dir / "bad_videos")
        global_batch = batch * dist.world_size() * accum
        sampler = ShardBatchSampler(batch, cfg.train.steps, accum, start_step,
                                    steps_per_epoch=len(dataset) // global_batch)
    else:
        dataset = build_dataset(cfg, items, bad_dir=run_dir / "bad_videos")
        sampler = StepBatchSampler(len(dataset), batch, cfg.train.steps, seed=cfg.train.seed,
                                   rank=dist.rank(), world=dist.world_size(),
                                   accumulation=accum, start_step=start_step)
        dataset = EpochIndexed(dataset)
    workers = cfg.data.workers
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                        collate_fn=collate, pin_memory=device.type == "cuda",
                        persistent_workers=workers > 0,
                        prefetch_factor=4 if workers > 0 else None)
    augment = tuple(PhotometricAugment.for_view(view, color_strength=cfg.data.color_strength,
                                                crop_size=cfg.data.size) for view in "ab")
    return loader, getattr(dataset, "dataset", dataset), augment


def device_batches(loader: DataLoader, device: torch.device,
                   augment: tuple[PhotometricAugment, ...], cfg: Config, start_step: int
                   ) -> Iterator[dict[str, torch.Tensor]]:
    """Model kwargs per micro-batch: copied to ``device`` (non-blocking from pinned memory),
    colour-augmented there with a generator seeded by (seed, rank, micro-batch number)."""
    channels_last = device.type == "cuda" and cfg.train.channels_last
    counter = start_step * cfg.optim.accumulation_steps
    for batch in loader:
        gen = torch.Generator().manual_seed((cfg.train.seed << 40) + (dist.rank() << 32) + counter)
        counter += 1
        out = {k: batch[k].to(device, non_blocking=True) for k in MODEL_KEYS}
        if cfg.model.variant == "supervised":
            out.update({k: batch[v].to(device, non_blocking=True)
                        for k, v in SUPERVISED_KEYS.items()})
        for key, aug in zip(("view_a", "view_b"), augment, strict=True):
            view = aug(out[key], gen)
            out[key] = view.contiguous(memory_format=torch.channels_last_3d) if channels_last \
                else view
        yield out
