"""Step-indexed batch sampler: reproducible, sharded, and resumable at any step."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Dataset, Sampler


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Yields this process's micro-batches of (epoch, index) pairs from ``start_step`` on.

    Epoch e is a permutation of the data set drawn from (seed, e); each optimiser step takes the
    next ``global_batch = batch * world * accumulation`` videos of it (the tail of an epoch that
    does not fill a step is dropped). Micro-batch m of step s on rank r is the slice
    ``[(m * world + r) * batch, ... + batch)`` of that step's videos. Resuming at step s decodes
    nothing before it.
    """

    def __init__(self, num_videos: int, batch: int, steps: int, seed: int = 0, rank: int = 0,
                 world: int = 1, accumulation: int = 1, start_step: int = 0) -> None:
        self.global_batch = batch * world * accumulation
        if num_videos < self.global_batch:
            raise ValueError(f"the data set has {num_videos} videos but one optimiser step needs "
                             f"{self.global_batch} (train.batch_size x processes x "
                             f"optim.accumulation_steps); lower train.batch_size")
        self.num_videos, self.batch, self.steps, self.seed = num_videos, batch, steps, seed
        self.rank, self.world, self.accumulation = rank, world, accumulation
        self.start_step = start_step
        self.steps_per_epoch = num_videos // self.global_batch

    def _permutation(self, epoch: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.num_videos, generator=gen)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, perm = -1, None
        for step in range(self.start_step, self.steps):
            if step // self.steps_per_epoch != epoch:
                epoch = step // self.steps_per_epoch
                perm = self._permutation(epoch)
            base = (step % self.steps_per_epoch) * self.global_batch
            for m in range(self.accumulation):
                start = base + (m * self.world + self.rank) * self.batch
                yield [(epoch, int(i)) for i in perm[start:start + self.batch]]

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accumulation


class EpochIndexed(Dataset):
    """Wraps a dataset with ``set_epoch``: item (epoch, index) is ``dataset[index]`` in epoch."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]):
        epoch, index = key
        if getattr(self.dataset, "epoch", None) != epoch:
            self.dataset.set_epoch(epoch)
        return self.dataset[index]
