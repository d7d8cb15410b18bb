"""WebDataset tar shards: written by ``constcl data prepare --shards``, streamed by pretraining.

Format: each shard is a plain tar; sample ``KEY`` is the members ``KEY.mp4`` (any of
``sources.VIDEO_EXTENSIONS``) and optionally ``KEY.json`` (``{"label": int, "class_name": str,
...}``) or ``KEY.cls`` (an integer), WebDataset's convention. ``prepare`` names shards
``OUT/shards/shard-000000.tar ...`` with the key = the source video's id (20 hex digits), packs the
videos in a shuffled order (seed 0) and writes ``OUT/shards/index.json`` (shard names and sample
counts) last.

``data.source`` is a shard source when it is a folder holding ``index.json`` or ends in ``.tar``
(one file or a brace pattern such as ``/data/k400-{000000..000099}.tar``; anything
``webdataset`` can open, e.g. ``pipe:`` or ``https://`` URLs, works in a pattern).

Reading (:class:`ShardTwoViewDataset`): every process (rank) reads ``streams = max(1,
data.workers)`` independent streams, one per DataLoader worker, and micro-batch ``m`` of a rank
comes whole from stream ``m % streams`` (the DataLoader hands micro-batches to workers in turn, so
each worker plays one stream). In stream epoch ``e`` the shards are permuted by ``(seed, e)``;
rank ``r`` of ``R`` takes ``perm[r::R]`` and stream ``j`` of ``W`` takes that list's ``[j::W]``,
so every rank and worker reads distinct shards (it needs ``R * W`` shards at least). A stream goes
through its shards epoch after epoch, through a shuffle buffer of ``data.shuffle_buffer`` samples
(seeded by ``(seed, rank, j)``); each sample's two views use ``np.random.default_rng([seed, e,
crc32(shard:key)])``. Bad samples are recorded in the run's bad-video folder like bad files and
skipped (the next sample of the stream takes their place).

Resume: the stream contents are a function of ``(seed, rank, world, data.workers,
data.shuffle_buffer)``, so a run resumed at step ``s`` fast-forwards each stream past the
``s * accumulation_steps // W`` micro-batches it served before: it re-reads those samples from the
shards (I/O only: nothing is decoded, samples recorded bad are skipped exactly as they were) and
continues. The resumed run therefore sees exactly the samples the uninterrupted run would have
seen, with two exceptions: (1) resuming with another ``data.workers`` (or world size) changes the
streams, so the remaining order differs (every sample is still read once per stream epoch, but
some samples of the interrupted stream epoch are repeated and others skipped); (2) a video that
decodes at some clip positions but not at others is skipped after its first failure, also during
the fast-forward, which shifts that stream by one sample. ``prepare`` verifies every video it
writes, so (2) does not happen on prepared shards.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import logging
import os
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset, Sampler

from constcl.data.dataset import (
    TooManyBadVideos,
    ViewSettings,
    read_bad_records,
    record_bad,
)
from constcl.data.decode import EncodedVideo, VideoError, VideoInfo, probe
from constcl.data.sources import VIDEO_EXTENSIONS, VideoItem

__all__ = ["SHARD_INDEX", "ShardList", "is_shard_source", "list_shards", "write_shards",
           "shards_complete", "ShardTwoViewDataset", "ShardBatchSampler"]

log = logging.getLogger(__name__)

SHARD_INDEX = "index.json"
_MISSING_WDS = ("shard patterns need the webdataset package: pip install 'constcl[shards]' "
                "(or give the folder written by `constcl data prepare --shards`)")


# ---------------------------------------------------------------------------- writing


def _jobs_hash(job_ids: list[str]) -> str:
    return hashlib.sha1("\n".join(job_ids).encode()).hexdigest()


def write_shards(out: Path, rows: list[dict], num_shards: int, shard_bytes: int,
                 job_ids: list[str]) -> list[Path]:
    """Pack the prepared videos of ``rows`` (``prepare``'s manifest rows, with ``id`` and
    ``path`` relative to ``out``) into ``out/shards``; ``num_shards`` shards of nearly equal
    counts, or new shards whenever one reaches ``shard_bytes``. ``index.json`` comes last."""
    folder = out / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SHARD_INDEX).unlink(missing_ok=True)
    for old in folder.glob("shard-*.tar*"):
        old.unlink()
    if not rows:
        raise ValueError(f"{out}: no usable video to pack into shards")
    order = [rows[i] for i in np.random.default_rng(0).permutation(len(rows))]
    if num_shards:
        groups = [list(g) for g in np.array_split(np.arange(len(order)), min(num_shards,
                                                                               len(order)))]
    else:
        groups, current, size = [], [], 0
        for i, row in enumerate(order):
            if current and size >= shard_bytes:
                groups.append(current)
                current, size = [], 0
            current.append(i)
            size += (out / row["path"]).stat().st_size
        groups.append(current)
    entries, paths = [], []
    for n, group in enumerate(groups):
        path = folder / f"shard-{n:06d}.tar"
        _write_tar(path, out, [order[i] for i in group])
        entries.append({"name": path.name, "samples": len(group), "bytes": path.stat().st_size})
        paths.append(path)
    pattern = f"shard-{{000000..{len(groups) - 1:06d}}}.tar"
    index = {"format": "constcl-shards-1", "pattern": pattern,
             "shards": entries, "samples": len(rows), "num_shards": num_shards,
             "shard_bytes": shard_bytes, "jobs": _jobs_hash(job_ids)}
    tmp = folder / (SHARD_INDEX + ".tmp")
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, folder / SHARD_INDEX)
    return paths


def _write_tar(path: Path, out: Path, rows: list[dict]) -> None:
    partial = path.with_name(path.name + ".partial")
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
        for row in rows:
            meta = {k: row[k] for k in ("label", "class_name", "source", "duration", "fps",
                                        "width", "height", "num_frames")}
            meta["label"] = None if meta["label"] == "" else int(meta["label"])
            members = [(f"{row['id']}.mp4", (out / row["path"]).read_bytes()),
                       (f"{row['id']}.json", json.dumps(meta).encode())]
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), 0, 0o444
                tar.addfile(info, io.BytesIO(data))
    os.replace(partial, path)


def shards_complete(out: Path, job_ids: list[str], num_shards: int, shard_bytes: int) -> bool:
    """Whether ``out/shards`` already holds the shards of exactly these jobs and settings."""
    index_path = out / "shards" / SHARD_INDEX
    if not index_path.is_file() or not (out / "report.json").is_file():
        return False
    index = json.loads(index_path.read_text())
    return (index.get("jobs") == _jobs_hash(job_ids) and index.get("num_shards") == num_shards
            and index.get("shard_bytes") == shard_bytes
            and all((out / "shards" / s["name"]).is_file() for s in index["shards"]))


# ---------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class ShardList:
    """The shards of a source: URLs or paths, and per-shard sample counts when known."""

    urls: tuple[str, ...]
    counts: tuple[int, ...] | None = None

    @property
    def samples(self) -> int | None:
        return None if self.counts is None else sum(self.counts)

    def __len__(self) -> int:
        return len(self.urls)


def is_shard_source(source: str | Path) -> bool:
    """A folder with ``index.json`` or a path / pattern ending in ``.tar``."""
    text = str(source).strip()
    return text.endswith(".tar") or (Path(text).expanduser() / SHARD_INDEX).is_file()


def list_shards(source: str | Path) -> ShardList:
    """Expand a shard source (see the module docstring). Raises FileNotFoundError when a local
    shard is missing."""
    text = str(source).strip()
    folder = Path(text).expanduser()
    if (folder / SHARD_INDEX).is_file():
        index = json.loads((folder / SHARD_INDEX).read_text())
        urls = tuple(str(folder / s["name"]) for s in index["shards"])
        counts: tuple[int, ...] | None = tuple(int(s["samples"]) for s in index["shards"])
    else:
        try:
            from webdataset.shardlists import expand_urls
        except ImportError as err:
            raise ImportError(_MISSING_WDS) from err
        urls = tuple(expand_urls(os.path.expanduser(text)))
        counts = None
    local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
    missing = [u for u in local if not Path(u).is_file()]
    if missing:
        raise FileNotFoundError(f"data.source={text!r}: {len(missing)} of {len(urls)} shards "
                                f"are missing, e.g. {missing[:3]}")
    if counts is None and len(local) == len(urls):
        counts = tuple(_count_samples(u) for u in urls)
    return ShardList(urls, counts)


def _count_samples(path: str) -> int:
    """Samples (keys with a video member) of a local tar, reading its headers only."""
    with tarfile.open(path) as tar:
        return len({_split(m.name)[0] for m in tar if _is_video(m.name)})


def _split(name: str) -> tuple[str, str]:
    """WebDataset's key / extension split: at the first dot of the base name."""
    folder, _, base = name.rpartition("/")
    stem, _, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), ext.lower()


def _is_video(name: str) -> bool:
    return f".{_split(name)[1]}" in VIDEO_EXTENSIONS


# ---------------------------------------------------------------------------- reading


def _iter_shard(url: str) -> Iterator[dict]:
    """Samples of one shard as ``{"__key__", ext: bytes, ...}``; a broken shard is logged and
    ends early."""
    try:
        from webdataset.tariterators import tarfile_samples
    except ImportError as err:
        raise ImportError(_MISSING_WDS) from err

    def warn(exn: Exception) -> bool:
        log.warning("shard %s: %s; skipping the rest of it", url, exn)
        return False

    yield from tarfile_samples([{"url": url}], handler=warn)


def _shuffled(items: Iterator, size: int, rng: np.random.Generator) -> Iterator:
    """A shuffle buffer: fill ``size`` items, then emit a random one for each new one."""
    buffer: list = []
    for item in items:
        if len(buffer) < size:
            buffer.append(item)
            continue
        i = int(rng.integers(size))
        buffer[i], item = item, buffer[i]
        yield item
    rng.shuffle(buffer)
    yield from buffer


@dataclass(frozen=True)
class _Raw:
    epoch: int
    name: str  # url:key
    index: int  # position in the whole shard list (-1: unknown)
    sample: dict


class ShardTwoViewDataset(Dataset):
    """Two-view samples streamed from shards, served one micro-batch at a time.

    Indexed by ``(m, i)`` keys (``ShardBatchSampler``): ``__getitems__`` returns the next
    ``len(keys)`` samples of stream ``m % streams`` (the sample contract of ``TwoViewDataset``;
    ``index`` is the sample's position in the shard list, -1 when counts are unknown).

    Args:
        shards: the shard list.
        views: two-view settings (the ``detections`` generator is not supported).
        rank: this process.
        world: the number of processes.
        streams: streams per process (= DataLoader workers, at least 1).
        buffer: shuffle-buffer size in samples.
        seed: base seed.
        bad_dir: folder of bad-sample records (shared by workers and processes).
        max_bad_fraction: stop when more than this fraction of the samples is bad.
    """

    def __init__(self, shards: ShardList, views: ViewSettings, rank: int = 0, world: int = 1,
                 streams: int = 1, buffer: int = 256, seed: int = 0,
                 bad_dir: str | Path = "bad_videos", max_bad_fraction: float = 0.05) -> None:
        if views.region_generator == "detections":
            raise ValueError("data.region_generator=detections is not supported with a shard "
                             "source; use random or cues, or train on the prepared files")
        if len(shards) < world * streams:
            raise ValueError(f"the shard source has {len(shards)} shards, but {world} processes "
                             f"x {streams} workers need one each at least; write more shards "
                             f"(constcl data prepare --shards N) or lower data.workers")
        self.shards, self.views, self.rank, self.world = shards, views, rank, world
        self.streams, self.buffer, self.seed = streams, buffer, seed
        self.bad_dir, self.max_bad_fraction = Path(bad_dir), max_bad_fraction
        self.bad_dir.mkdir(parents=True, exist_ok=True)
        self.offsets = None if shards.counts is None else \
            dict(zip(shards.urls, np.cumsum((0, *shards.counts[:-1])).tolist(), strict=True))
        self._stream: Iterator[_Raw] | None = None
        self._next_m = -1
        self._seen = 0

    def __len__(self) -> int:
        return self.shards.samples or 0

    def stream_shards(self, stream: int, epoch: int) -> list[str]:
        """Shards read by stream ``stream`` of this rank in stream epoch ``epoch``."""
        perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.shards))
        return [self.shards.urls[i] for i in perm[self.rank::self.world][stream::self.streams]]

    def _raw(self, stream: int) -> Iterator[_Raw]:
        def read() -> Iterator[_Raw]:
            for epoch in itertools.count():
                for url in self.stream_shards(stream, epoch):
                    base = -1 if self.offsets is None else self.offsets[url]
                    position = 0
                    for sample in _iter_shard(url):
                        video = next((k for k in sample if f".{k}" in VIDEO_EXTENSIONS), None)
                        index = base + position if base >= 0 else -1
                        position += video is not None
                        yield _Raw(epoch, f"{url}:{sample['__key__']}", index, sample)

        rng = np.random.default_rng([self.seed, self.rank, stream, 1])
        return _shuffled(read(), self.buffer, rng)

    def _record(self, name: str) -> Path:
        return self.bad_dir / f"{hashlib.sha1(name.encode()).hexdigest()[:20]}.txt"

    def _open(self, stream: int, skip: int) -> None:
        """Start stream ``stream`` after its first ``skip`` good samples (the fast-forward)."""
        raw = self._raw(stream)
        done, good_epoch = 0, 0
        while done < skip:
            item = next(raw)
            if not self._record(item.name).exists():
                done, good_epoch = done + 1, item.epoch
            elif item.epoch >= good_epoch + 2:
                raise TooManyBadVideos(f"no usable sample in the shards of this worker (e.g. "
                                       f"{item.name.rsplit(':', 1)[0]})")
        self._stream = raw

    def __getitems__(self, keys: list[tuple[int, int]]) -> list[dict]:
        m = int(keys[0][0])
        if m != self._next_m:
            self._open(m % self.streams, (m // self.streams) * len(keys))
        self._next_m = m + self.streams
        return [self._next_sample() for _ in keys]

    def __getitem__(self, key: tuple[int, int]) -> dict:
        return self.__getitems__([key])[0]

    def _next_sample(self) -> dict:
        skipped, first_epoch = 0, None
        for item in self._stream:
            first_epoch = item.epoch if first_epoch is None else first_epoch
            if item.epoch >= first_epoch + 2:  # a whole stream epoch without a usable sample
                raise TooManyBadVideos(
                    f"no usable sample in the shards of this worker (e.g. "
                    f"{item.name.rsplit(':', 1)[0]}); bad so far: {self.num_bad()}. Run "
                    "`constcl data check` on the source and prepare it again")
            if self._record(item.name).exists():
                skipped += 1
                continue
            self._seen += 1
            try:
                sample = self._make(item)
            except VideoError as err:
                self._record_bad(item.name, err.reason)
                skipped += 1
                self._check_bad_fraction()
                continue
            sample.update(index=item.index, num_skipped=skipped)
            return sample
        raise RuntimeError("shard streams are endless")  # pragma: no cover

    def _make(self, item: _Raw) -> dict:
        sample = item.sample
        ext = next((k for k in sample if f".{k}" in VIDEO_EXTENSIONS), None)
        if ext is None:
            raise VideoError(item.name, f"no video member (members: {sorted(sample)})")
        video = EncodedVideo(item.name, sample[ext])
        info = _info_from_meta(video, sample) or probe(video, self.views.decoder)
        rng = np.random.default_rng([self.seed, item.epoch, zlib.crc32(item.name.encode())])
        return self.views.two_views(video, info, VideoItem(Path(item.name), _label(sample)), rng)

    def _record_bad(self, name: str, reason: str) -> None:
        record_bad(self._record(name), name, reason)

    def bad_files(self) -> list[tuple[str, str]]:
        """(shard:key, reason) of every bad sample recorded so far, by any worker."""
        return read_bad_records(self.bad_dir)

    def num_bad(self) -> int:
        """Number of bad samples recorded so far."""
        return sum(1 for _ in self.bad_dir.glob("*.txt"))

    def _check_bad_fraction(self) -> None:
        total = self.shards.samples or self._seen
        bad = self.num_bad()
        if bad > self.max_bad_fraction * total and (self.shards.samples or self._seen >= 20):
            examples = "; ".join(f"{p} ({r})" for p, r in self.bad_files()[:5])
            raise TooManyBadVideos(f"{bad} of {total} shard samples are bad (more than "
                                   f"max_bad_fraction={self.max_bad_fraction}); e.g. {examples}")


def _info_from_meta(video: EncodedVideo, sample: dict) -> VideoInfo | None:
    """The video's header as ``prepare`` recorded it in ``KEY.json`` (it verified the file), so
    that shards written by ``prepare`` need no probe; None for other shards."""
    if "json" not in sample:
        return None
    meta = json.loads(sample["json"])
    if any(meta.get(k) is None for k in ("num_frames", "fps", "duration", "width", "height")):
        return None
    return VideoInfo(video.name, int(meta["num_frames"]), float(meta["fps"]),
                     float(meta["duration"]), int(meta["width"]), int(meta["height"]))


def _label(sample: dict) -> int | None:
    if "json" in sample:
        label = json.loads(sample["json"]).get("label")
        return None if label is None else int(label)
    if "cls" in sample:
        return int(sample["cls"].decode().strip())
    return None


class ShardBatchSampler(Sampler[list[tuple[int, int]]]):
    """Micro-batch keys ``[(m, 0), ..., (m, batch - 1)]`` for this process's micro-batches ``m``
    from ``start_step * accumulation`` on (see :class:`ShardTwoViewDataset`)."""

    def __init__(self, batch: int, steps: int, accumulation: int = 1, start_step: int = 0,
                 steps_per_epoch: int = 0) -> None:
        self.batch, self.steps, self.accumulation = batch, steps, accumulation
        self.start_step, self.steps_per_epoch = start_step, steps_per_epoch

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for m in range(self.start_step * self.accumulation, self.steps * self.accumulation):
            yield [(m, i) for i in range(self.batch)]

    def __len__(self) -> int:
        return (self.steps - self.start_step) * self.accumulation
