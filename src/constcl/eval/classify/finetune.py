"""Full fine-tuning for ``constcl eval classify --mode finetune`` (docs/evaluation.md section 1.3).

The whole backbone plus a new linear head (after global average pooling and dropout 0.5) is
trained end to end with softmax cross-entropy; BatchNorm is in training mode (per-device batch
statistics; with small batches prefer larger ``--batch-size`` or a frozen-BN variant).
Training clips: one random temporal position per video and epoch (uniform over the valid
starts), a random resized crop (area 0.3-1, aspect 0.5-2) and a horizontal flip
(``data.augment.random_crop_flip``). Optimiser: SGD, momentum 0.9, per-step warm-up + cosine
learning rate. Testing uses the same multi-view averaging as the linear probe. Nothing is
cached, since the network changes. The exact hyper-parameters of ConST-CL's fine-tuning are
unverified (docs/evaluation.md section 1.3); the defaults are only a starting point.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from constcl.data.augment import random_crop_flip, to_model_range
from constcl.data.dataset import record_bad
from constcl.data.decode import VideoError, decode_frames, probe
from constcl.eval.classify.data import VideoSplits
from constcl.eval.classify.scoring import video_accuracy
from constcl.eval.feature_cache import encode_views
from constcl.eval.finite import check_finite, check_training
from constcl.eval.views import ViewSpec, clamped_clip_indices
from constcl.models.r3d import R3D
from constcl.schedule import warmup_cosine

__all__ = ["FineTuneConfig", "FineTuneNet", "RandomClipVideos", "run_finetune"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FineTuneConfig:
    """SGD (momentum 0.9) with a 5 % warm-up and cosine decay over ``epochs``; ``batch_size``
    clips per step; ``workers`` decode processes; ``encode_batch_size`` test views per
    forward pass."""

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 8
    weight_decay: float = 0.0
    seed: int = 0
    workers: int = 2
    encode_batch_size: int = 8


class FineTuneNet(nn.Module):
    """Backbone + dropout + linear head: ``(B, 3, T, H, W)`` in [-1, 1] -> ``(B, C)`` logits."""

    def __init__(self, backbone: R3D, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.backbone = backbone
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(backbone.out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.backbone(x)))


class RandomClipVideos(Dataset):
    """Video ``i`` -> one augmented training clip, float ``(3, T, S, S)`` in [-1, 1], and its
    label; ``None`` when the video cannot be decoded. Randomness comes from
    ``default_rng([seed, epoch, i])`` (independent of worker count and order). A bad video is
    logged once, not once per epoch: the record in ``bad_dir`` is created exclusively by
    whichever worker process meets it first (``data.dataset.record_bad``)."""

    def __init__(self, paths: list[str], labels: list[int], spec: ViewSpec, seed: int,
                 bad_dir: str | Path) -> None:
        self.paths, self.labels, self.spec, self.seed = paths, labels, spec, seed
        self.bad_dir = Path(bad_dir)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | None:
        s = self.spec
        rng = np.random.default_rng([self.seed, self.epoch, index])
        try:
            length = probe(self.paths[index]).num_frames
            start = int(rng.integers(0, max(length - s.span, 0) + 1))
            indices = clamped_clip_indices(start, s.frames, s.stride, length)
            frames = decode_frames(self.paths[index], indices, short_side=s.size)
        except VideoError as err:
            record_bad(self.bad_dir / f"{index}.txt", self.paths[index], err.reason)
            return None
        clip, _ = random_crop_flip(frames, s.size, rng)
        return to_model_range(clip), self.labels[index]


def _collate(batch: list[Any]) -> tuple[torch.Tensor, torch.Tensor] | None:
    batch = [b for b in batch if b is not None]
    if not batch:
        return None
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch])


def _train(model: FineTuneNet, data: RandomClipVideos, args: FineTuneConfig,
           device: torch.device) -> list[dict[str, float]]:
    """Fine-tune in place; returns one history row per epoch (loss, train_acc, lr)."""
    steps_per_epoch = math.ceil(len(data) / args.batch_size)
    total = args.epochs * steps_per_epoch
    lrs = warmup_cosine(args.lr, total, round(0.05 * total))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9,
                          weight_decay=args.weight_decay)
    history, step = [], 0
    for epoch in range(args.epochs):
        data.epoch = epoch
        loader = DataLoader(data, batch_size=args.batch_size, shuffle=True,
                            num_workers=args.workers, collate_fn=_collate,
                            generator=torch.Generator().manual_seed(args.seed + epoch))
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for batch in tqdm(loader, desc=f"fine-tune epoch {epoch + 1}", leave=False):
            for group in opt.param_groups:
                group["lr"] = float(lrs[min(step, total - 1)])
            step += 1
            if batch is None:
                continue
            x, y = batch[0].to(device), batch[1].to(device)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1),
                        "train_acc": correct / max(seen, 1), "lr": float(lrs[step - 1])})
        log.info("fine-tune epoch %d: %s", epoch + 1, history[-1])
    return history


def run_finetune(backbone: R3D, splits: VideoSplits, train_spec: ViewSpec,
                 test_spec: ViewSpec, args: FineTuneConfig, device: torch.device,
                 checkpoint: str = "?") -> dict[str, Any]:
    """Fine-tune ``backbone`` (in place) on the training split, then multi-view test; same
    result keys as the probe. Non-finite weights after training or non-finite test scores
    raise :class:`NonFiniteError` naming ``checkpoint``."""
    torch.manual_seed(args.seed)
    model = FineTuneNet(backbone, len(splits.classes)).to(device)
    with tempfile.TemporaryDirectory(prefix="constcl-bad-") as bad_dir:
        train = RandomClipVideos([str(i.path) for i in splits.train],
                                 [int(i.label) for i in splits.train], train_spec, args.seed,
                                 bad_dir)
        history = _train(model, train, args, device)
    check_training(model, history, task="classify", checkpoint=checkpoint,
                   what="the fine-tuned network", lr=args.lr)
    model.eval()
    test_paths = [str(i.path) for i in splits.test]
    enc = encode_views(model, test_paths, test_spec, device, args.encode_batch_size,
                       args.workers, desc="testing")
    y_test = np.array([i.label for i in splits.test])
    check_finite(enc["values"], task="classify", checkpoint=checkpoint,
                 what="the fine-tuned network's test scores")
    acc, scores, y = video_accuracy(enc["values"], enc["video_index"], y_test)
    return {"metrics": {f"top{k}": v for k, v in acc.items()}, "scores": scores, "labels": y,
            "test_videos": np.unique(enc["video_index"]),
            "history": history, "cache_hit": {"train": False, "test": False},
            "videos_evaluated": {"train": len(train), "test": int(len(y))},
            "videos_failed": {"test": enc["failed"]},
            "feature_dim": model.backbone.out_channels}
