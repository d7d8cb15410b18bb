"""``TwoViewDataset``: a video -> two augmented clips with region boxes (docs/spec.md section 1).

Sample contract (``__getitem__``), S = ``size``, T = ``clip_frames``, K = ``num_regions``:

=============  =====================  ==============================================
key            type, shape            meaning
=============  =====================  ==============================================
view_a/view_b  uint8 (3, T, S, S)     cropped + flipped clips; photometric part is
                                      applied later on the device (``PhotometricAugment``)
boxes_a/_b     float32 (K, 4)         x1, y1, x2, y2 normalised to that view's clip
mask_a/_b      bool (K,)              valid boxes (invalid rows are zeros)
index          int                    index of the video actually used
label          int                    class, -1 if the source has none
num_skipped    int                    bad files skipped to produce this sample
=============  =====================  ==============================================

Randomness: every sample draws from ``np.random.default_rng([seed, epoch, index])``, so samples
do not depend on the number of workers or their order; call ``set_epoch`` each epoch (before
the DataLoader iterator is created, so workers see it).

Bad files: a file that fails (``VideoError``) is recorded in a shared *bad-file folder*
(``bad_dir``; a temporary folder by default). The record is created atomically, so the file is
logged once across all workers and processes that share the folder, and known-bad files are
skipped without being opened again. The failed sample is replaced by another index drawn from the
same per-sample RNG (at most ``max_retries`` times). When more than ``max_bad_fraction`` of the
data set is recorded bad, the dataset raises ``TooManyBadVideos`` listing examples.
``bad_files()`` reads the records from any process.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from constcl.data.augment import CropParams, random_crop_flip
from constcl.data.decode import VideoError, VideoInfo, VideoInput, decode_clips, probe
from constcl.data.regions import REGION_GENERATORS, cue_regions, detection_regions, random_regions
from constcl.data.sampling import ClipSpec, sample_two_clips
from constcl.data.sources import VideoItem, load_boxes
from constcl.errors import ConstclError

__all__ = ["TwoViewDataset", "TooManyBadVideos", "ViewSettings", "collate", "identity_collate"]

log = logging.getLogger(__name__)


class TooManyBadVideos(ConstclError, RuntimeError):
    """More than the allowed fraction of a data set failed to decode."""


@dataclass(frozen=True)
class ViewSettings:
    """How a video becomes two views: clip spec, crop side, K regions, region generator,
    decode-time resize (None: keep) and decoder name (``decode.DECODERS``). Shared by the file
    and the shard sources (:meth:`two_views`)."""

    clip: ClipSpec = ClipSpec(16, 2)
    size: int = 224
    num_regions: int = 8
    region_generator: str = "random"
    short_side: int | None = None
    decoder: str = "pyav"

    def two_views(self, video: VideoInput, info: VideoInfo, item: VideoItem,
                  rng: np.random.Generator) -> dict:
        """The two augmented views of ``video`` with their regions: the sample contract above
        without ``index`` and ``num_skipped``; ``item`` gives the label and the box file.

        Raises:
            VideoError: the video cannot be decoded at the sampled frames.
        """
        sample: dict = {"label": -1 if item.label is None else int(item.label)}
        clips = sample_two_clips(info.num_frames, self.clip, rng)
        decoded = decode_clips(video, clips, self.short_side, backend=self.decoder)
        for view, indices, frames in zip("ab", clips, decoded, strict=True):  # (T, H, W, 3)
            clip, params = random_crop_flip(frames, self.size, rng)
            key = self.clip.key_frame
            boxes, mask = self._regions(item, frames[key], int(indices[key]), params, rng)
            sample[f"view_{view}"] = clip
            sample[f"boxes_{view}"] = torch.from_numpy(boxes)
            sample[f"mask_{view}"] = torch.from_numpy(mask)
        return sample

    def _regions(
        self,
        item: VideoItem,
        key_frame: np.ndarray,
        key_index: int,
        params: CropParams,
        rng: np.random.Generator,
    ) -> tuple[np.ndarray, np.ndarray]:
        if self.region_generator == "random":
            return random_regions(self.num_regions, rng)
        if self.region_generator == "cues":
            return cue_regions(key_frame, params, self.num_regions, rng)
        boxes = load_boxes(item.boxes_path) if item.boxes_path is not None else {}
        return detection_regions(boxes, key_index, params, self.num_regions)


def record_bad(record: Path, name: str, reason: str) -> None:
    """Write ``name<TAB>reason`` to ``record`` unless another worker already has (the file is
    created exclusively, so each bad video is recorded and logged once)."""
    try:
        fd = os.open(record, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return  # another worker got there first and logged it
    with os.fdopen(fd, "w") as f:
        f.write(f"{name}\t{reason}\n")
    log.warning("skipping bad video %s: %s", name, reason)


def read_bad_records(bad_dir: Path) -> list[tuple[str, str]]:
    """(name, reason) of every complete record in ``bad_dir``, in file-name order."""
    out = []
    for record in sorted(bad_dir.glob("*.txt")):
        text = record.read_text().rstrip("\n")
        if "\t" in text:  # skip a record still being written
            out.append(tuple(text.split("\t", 1)))
    return out


class TwoViewDataset(Dataset):
    """Two temporally distant, independently augmented clips of each video, with regions.

    Args:
        items: videos, e.g. from ``sources.list_videos``.
        clip_frames: clip length T (docs/spec.md section 1: 16).
        frame_stride: temporal stride between frames (docs/spec.md section 1: 2).
        size: output side S of the square crops.
        num_regions: K boxes per view.
        region_generator: "random" (default), "cues" or "detections" (needs box files).
        short_side: resize frames during decoding so their short side is this (None: keep);
            speeds up large videos, since crops are resized to ``size`` anyway.
        max_retries: replacement samples tried after a bad file before giving up.
        max_bad_fraction: fraction of bad files tolerated before the run stops.
        seed: base seed of the per-sample RNG.
        bad_dir: shared folder of bad-file records (None: a private temporary folder).
        decoder: decoding backend (``decode.DECODERS``; default PyAV).
    """

    def __init__(
        self,
        items: Sequence[VideoItem],
        clip_frames: int = 16,
        frame_stride: int = 2,
        size: int = 224,
        num_regions: int = 8,
        region_generator: str = "random",
        short_side: int | None = None,
        max_retries: int = 10,
        max_bad_fraction: float = 0.05,
        seed: int = 0,
        bad_dir: str | Path | None = None,
        decoder: str = "pyav",
    ) -> None:
        if region_generator not in REGION_GENERATORS:
            raise ValueError(f"region_generator must be one of {REGION_GENERATORS}")
        if not items:
            raise ValueError("TwoViewDataset needs at least one video")
        self.items = list(items)
        self.clip = ClipSpec(clip_frames, frame_stride)
        self.size, self.num_regions, self.region_generator = size, num_regions, region_generator
        self.short_side, self.max_retries = short_side, max_retries
        self.max_bad_fraction, self.seed, self.epoch = max_bad_fraction, seed, 0
        if bad_dir is None:
            bad_dir = tempfile.mkdtemp(prefix="constcl-bad-")
            weakref.finalize(self, _remove_if_owner, bad_dir, os.getpid())
        self.bad_dir = Path(bad_dir)
        self.bad_dir.mkdir(parents=True, exist_ok=True)
        self._info: dict[int, VideoInfo] = {}
        self.views = ViewSettings(self.clip, size, num_regions, region_generator, short_side,
                                  decoder)

    def __len__(self) -> int:
        return len(self.items)

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of this epoch (reproducible for any number of workers)."""
        self.epoch = epoch

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        current, skipped = index, 0
        for _ in range(self.max_retries + 1):
            if not self._known_bad(current):
                try:
                    sample = self._make_sample(current, rng)
                except VideoError as err:
                    self._record_bad(current, err.reason)
                else:
                    sample.update(index=current, num_skipped=skipped)
                    return sample
            skipped += 1
            self._check_bad_fraction()
            current = int(rng.integers(len(self.items)))
        raise TooManyBadVideos(
            f"{self.max_retries + 1} tries for sample {index} all hit bad videos; "
            f"bad files so far: {self._examples()}"
        )

    # ------------------------------------------------------------------------ one sample

    def _make_sample(self, index: int, rng: np.random.Generator) -> dict:
        item = self.items[index]
        info = self._info.get(index) or probe(item.path, self.views.decoder)
        self._info[index] = info
        return self.views.two_views(item.path, info, item, rng)

    # ------------------------------------------------------------------------ bad files

    def _record(self, index: int) -> Path:
        return self.bad_dir / f"{index}.txt"

    def _known_bad(self, index: int) -> bool:
        return self._record(index).exists()

    def _record_bad(self, index: int, reason: str) -> None:
        record_bad(self._record(index), str(self.items[index].path), reason)

    def bad_files(self) -> list[tuple[str, str]]:
        """(path, reason) of every bad file recorded so far, by any worker."""
        return read_bad_records(self.bad_dir)

    def num_bad(self) -> int:
        """Number of bad files recorded so far."""
        return sum(1 for _ in self.bad_dir.glob("*.txt"))

    def _check_bad_fraction(self) -> None:
        bad = self.num_bad()
        if bad > self.max_bad_fraction * len(self.items):
            found = f"{bad} bad video{'s' if bad != 1 else ''}"  # found so far, not all of them
            raise TooManyBadVideos(
                f"{found} found among the {len(self.items)} so far, more than "
                f"max_bad_fraction={self.max_bad_fraction} allows "
                f"({math.floor(self.max_bad_fraction * len(self.items))}); e.g. "
                f"{self._examples()}. Run `constcl data check` on the source to count them all."
            )

    def _examples(self, count: int = 5) -> str:
        return "; ".join(f"{p} ({r})" for p, r in self.bad_files()[:count])


def _remove_if_owner(folder: str, owner_pid: int) -> None:
    """Delete the temporary bad-file folder, only from the process that created it."""
    if os.getpid() == owner_pid:
        shutil.rmtree(folder, ignore_errors=True)


def collate(samples: list[dict]) -> dict:
    """Stack a list of samples into a batch (the default collate also works; this one keeps
    the ints as int64 tensors and fails loudly on mismatched shapes)."""
    batch = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        batch[key] = (
            torch.stack(values) if isinstance(values[0], torch.Tensor) else torch.tensor(values)
        )
    return batch


def identity_collate(batch: Any) -> Any:
    """``collate_fn`` that returns the batch unchanged (for ``batch_size=None`` loaders whose
    data set already yields whole batches); a module-level function, so worker processes can
    pickle it."""
    return batch
