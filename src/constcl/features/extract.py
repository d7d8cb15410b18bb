"""Features of every video of a source (behind ``constcl extract``).

Per video, a ``(snippets, C)`` float32 ``.npy`` of pooled res5 features, one row per snippet
(positions, output names and box rows: :mod:`constcl.features.plan`). Frames are decoded with
the short side resized to ``size`` and centre-cropped to ``size x size``, as the evaluations do
(``eval.views``), and enter the network through :class:`constcl.features.encoder.Encoder`.

Output folder ``OUT``::

    OUT/<rel>.npy            (snippets, C) float32; <rel>.global.npy / .local.npy for both
    OUT/<rel>.res5.npy       with dense: (snippets, C, T', H', W') float16 res5 maps
    OUT/<rel>.boxes.npy      with boxes: (rows, C) float32 RoI features, the video's CSV rows
    OUT/index.jsonl          one JSON row per extracted video: path, rel, label, class_name,
                             frames, fps, duration, width, height, snippets, start_times,
                             frame_indices, files, box_rows
    OUT/extract.json         the settings record: checkpoint digest and every setting
    OUT/report.json          the `data check` report of the source (ok, bad, files)
    OUT/.extract/records/    one JSON record per finished video (ok or bad)

**Resuming.** Every file is written under a temporary name and renamed, then the video's record
is written; a rerun skips the videos with an ok record whose files exist (their files are not
touched), deletes left-over temporary files and retries bad videos. A rerun with settings that
change the features (anything but workers, batch size, device, progress, strict) is refused.

**Scale.** DataLoader workers decode videos (each a stream of chunks of at most
``chunk_snippets`` snippets, so a long video never sits in memory whole); the main process
batches snippets across videos for the network on ``device`` (CUDA when available; bf16
autocast on request). Under ``torchrun`` with several processes, process ``r`` of ``N`` takes
videos ``r, r + N, ...``; process 0 writes ``index.jsonl`` and ``report.json`` at the end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from constcl import dist
from constcl.data.check import source_report
from constcl.data.decode import DECODERS
from constcl.data.sources import VIDEO_EXTENSIONS, resolve_source
from constcl.errors import ConstclError
from constcl.eval.detect.roi import boxes_to_rois, detection_roi_features
from constcl.eval.encoder import BRANCHES, resolve_device
from constcl.eval.settings import as_paths, check_choices, check_positive, choice
from constcl.faults import kill_on_fault
from constcl.features.encoder import Encoder, checkpoint_identity, load_encoder
from constcl.features.loader import VideoChunks
from constcl.features.plan import STRIDE_UNITS, Job, output_files, plan_jobs, read_box_rows
from constcl.models.r3d import INPUT_NORMS
from constcl.runlock import run_lock
from constcl.version import __version__

__all__ = ["ExtractResult", "ExtractSettings", "extract", "PRECISIONS"]

log = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16")
# settings that do not change any output number or name (a rerun may change them)
_FREE_FIELDS = ("out", "batch_size", "workers", "device", "strict", "progress",
                "chunk_snippets")


@dataclass(frozen=True, kw_only=True)
class ExtractSettings:
    """``constcl extract SOURCE --checkpoint CK --out DIR`` options.

    source: folder of videos (sub-folders mirrored in ``out``), .csv, .txt list or a prepared
        manifest.csv (anything ``data.source`` reads).
    checkpoint: ``backbone.safetensors`` (from ``constcl pretrain`` or ``constcl convert tf``),
        or ``random`` (then ``backbone`` is required).
    out: output folder (a rerun into it resumes).
    backbone: backbone name; read from the checkpoint when not given.
    input_norm: input normalisation of a random-init network (not given: ``none``).
    seed: seed of random-init weights.
    branch: res5 copy: ``global``, ``local`` (the region branch's) or ``both`` (one file each).
    clip_frames: frames per snippet.
    frame_stride: frames between a snippet's frames (nominal frame grid).
    size: short side the frames are resized to, then the centre ``size x size`` crop.
    stride: a snippet every ``stride`` seconds (or frames with ``stride_unit``).
    stride_unit: unit of ``stride``.
    dense: also write the res5 maps (float16, ``<name>.res5.npy``).
    boxes: AVA-style CSV (video_id, timestamp, x1, y1, x2, y2 normalised): RoI features per row
        in ``<name>.boxes.npy``.
    root: folder that CSV / list entries are relative to (default: the list's folder).
    batch_size: snippets per forward pass.
    workers: DataLoader processes that decode videos (0: in-process).
    device: ``auto`` (CUDA when available), ``cpu``, ``cuda:1``, ...
    precision: ``bf16``: autocast the network (features are stored in float32 either way).
    decoder: video decoder.
    strict: fail (exit 2) when any video is bad (default: skip and list them).
    progress: show a progress bar.
    chunk_snippets: snippets a worker decodes at a time.
    """

    source: str | Path
    checkpoint: str | Path
    out: str | Path
    backbone: str | None = None
    input_norm: str | None = choice(None, INPUT_NORMS)
    seed: int = 0
    branch: str = choice("global", (*BRANCHES, "both"))
    clip_frames: int = 16
    frame_stride: int = 2
    size: int = 224
    stride: float = 1.0
    stride_unit: str = choice("seconds", STRIDE_UNITS)
    dense: bool = False
    boxes: str | Path | None = None
    root: str | Path | None = None
    batch_size: int = 8
    workers: int = 2
    device: str = "auto"
    precision: str = choice("fp32", PRECISIONS)
    decoder: str = choice("pyav", DECODERS)
    strict: bool = False
    progress: bool = True
    chunk_snippets: int = 32

    def __post_init__(self) -> None:
        as_paths(self, "out", "boxes", "root")
        check_choices(self)
        check_positive(self, "clip_frames", "frame_stride", "size", "stride", "batch_size",
                       "chunk_snippets")
        if not np.isfinite(self.stride):
            raise ValueError(f"stride must be finite; got {self.stride}")
        if self.workers < 0:
            raise ValueError(f"workers must be >= 0; got {self.workers}")

    @property
    def branches(self) -> tuple[str, ...]:
        return BRANCHES if self.branch == "both" else (self.branch,)


@dataclass(frozen=True)
class ExtractResult:
    """What a run did: videos in the source, extracted now, finished before, bad (path,
    reason), and the index file."""

    total: int
    written: int
    reused: int
    bad: list[tuple[str, str]]
    index: Path


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _settings_record(settings: ExtractSettings) -> dict[str, Any]:
    """Every setting of the first run into OUT, the weights' identity and the version."""
    fields = {k: (str(v) if isinstance(v, Path) else v)
              for k, v in dataclasses.asdict(settings).items()}
    return {"settings": fields, "checkpoint": checkpoint_identity(
        settings.checkpoint, settings.backbone, settings.seed, settings.input_norm),
        "constcl_version": __version__}


def _check_record(out: Path, settings: ExtractSettings) -> None:
    """Write ``extract.json`` or refuse a rerun whose weights or output-changing settings
    differ (:data:`_FREE_FIELDS` may change)."""
    path = out / "extract.json"
    wanted = _settings_record(settings)
    if path.exists():
        found = json.loads(path.read_text())
        old, new = found.get("settings", {}), wanted["settings"]
        changed = sorted(k for k in {*old, *new}
                         if k not in _FREE_FIELDS and old.get(k) != new.get(k))
        if found.get("checkpoint") != wanted["checkpoint"]:
            changed.insert(0, "checkpoint (weights)")
        if changed:
            raise ConstclError(f"{path}: {out} holds features made with other settings "
                               f"({', '.join(changed)}); use the same settings to resume, or "
                               "another --out")
        return
    _write_json(path, wanted)


def _is_done(out: Path, record: Path) -> bool:
    if not record.is_file():
        return False
    data = json.loads(record.read_text())
    return bool(data.get("ok")) and all((out / f).is_file() for f in data["files"].values())


def _save_npy(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` under a temporary name next to ``path``; returns that name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    with tmp.open("wb") as f:
        np.save(f, array)
    return tmp


class _Writer:
    """Writes a finished video's files and record (atomically) and counts them."""

    def __init__(self, out: Path, records: Path, settings: ExtractSettings) -> None:
        self.out, self.records, self.settings = out, records, settings
        self.written = self.failed = 0

    def video(self, job: Job, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        files = output_files(job.rel, self.settings.branches, self.settings.dense,
                             bool(job.boxes))
        temps = {kind: _save_npy(self.out / files[kind], arrays[kind]) for kind in files}
        kill_on_fault("kill_during_extract", self.written + 1)  # files written, not renamed
        for kind, tmp in temps.items():
            os.replace(tmp, self.out / files[kind])
        row = {"path": str(job.item.path), "rel": job.rel, "label": job.item.label,
               "class_name": job.item.label_name,
               **{k: v for k, v in meta.items() if k not in ("box_groups", "box_rows")},
               **({"box_rows": meta["box_rows"]} if job.boxes else {}), "files": files}
        _write_json(self.records / f"{job.id}.json", {"ok": True, "row": row, "files": files,
                                                      "check": _check_row(job, meta, "")})
        self.written += 1

    def bad(self, job: Job, reason: str) -> None:
        log.warning("skipping bad video %s: %s", job.item.path, reason)
        self.failed += 1
        _write_json(self.records / f"{job.id}.json", {"ok": False, "files": {},
                                                      "check": _check_row(job, None, reason)})


def _check_row(job: Job, meta: dict[str, Any] | None, reason: str) -> dict[str, Any]:
    """The video's row of the `data check` report."""
    keys = ("duration", "fps", "width", "height", "num_frames")
    row: dict[str, Any] = {"path": str(job.item.path), "ok": meta is not None, "reason": reason,
                           **dict.fromkeys(keys)}
    if meta is not None:
        row.update({k: meta[k] for k in ("duration", "fps", "width", "height")},
                   num_frames=meta["frames"])
    return row


class _Batcher:
    """Runs snippets through the network in batches across videos and gathers each video's
    features; finished videos go to the writer."""

    def __init__(self, encoders: dict[str, Encoder], settings: ExtractSettings,
                 device: torch.device, writer: _Writer, jobs: list[Job]) -> None:
        self.encoders, self.settings, self.device = encoders, settings, device
        self.writer, self.jobs = writer, jobs
        self.pending: list[tuple[int, int, torch.Tensor]] = []  # (job, snippet, clip)
        self.videos: dict[int, dict[str, Any]] = {}
        self.snippets = 0

    def add(self, chunk: dict[str, Any]) -> None:
        index = int(chunk["job"])
        if chunk.get("error"):
            self.videos.pop(index, None)
            self.pending = [p for p in self.pending if p[0] != index]
            self.writer.bad(self.jobs[index], str(chunk["error"]))
            return
        if chunk.get("meta") is not None:
            self.videos[index] = self._start(index, chunk["meta"])
        state = self.videos.get(index)
        if state is None:  # an earlier chunk of this video failed
            return
        if chunk["kind"] == "boxes":
            self._boxes(state, chunk)
        else:
            first = int(chunk["first"])
            self.pending.extend((index, first + i, clip) for i, clip in enumerate(chunk["frames"]))
            while len(self.pending) >= self.settings.batch_size:
                self._run(self.pending[: self.settings.batch_size])
                self.pending = self.pending[self.settings.batch_size:]
        self._finish_if_done(index)

    def flush(self) -> None:
        while self.pending:
            batch, self.pending = self.pending[: self.settings.batch_size], \
                self.pending[self.settings.batch_size:]
            self._run(batch)
        for index in list(self.videos):
            self._finish_if_done(index)
        if self.videos:  # every chunk has arrived: a video still open is a bug
            raise RuntimeError(f"videos left unfinished: {[self.jobs[i].rel for i in self.videos]}")

    def _start(self, index: int, meta: dict[str, Any]) -> dict[str, Any]:
        n, boxes = meta["snippets"], len(self.jobs[index].boxes)
        c = next(iter(self.encoders.values())).out_channels
        arrays: dict[str, np.ndarray] = {}
        for branch in self.settings.branches:
            arrays[branch] = np.zeros((n, c), np.float32)
            if boxes:
                arrays[f"{branch}.boxes"] = np.zeros((boxes, c), np.float32)
        return {"meta": meta, "arrays": arrays, "dense": {}, "left": n,
                "box_groups_left": meta["box_groups"]}

    def _forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 (B, T, H, W, 3) -> {branch: res5 map (B, C, T', H', W') float32}; the trunk
        runs once (every branch of one file shares it)."""
        first = next(iter(self.encoders.values()))
        x = first.prepare(frames.to(self.device, non_blocking=True))
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16,
                                  enabled=self.settings.precision == "bf16")
        with torch.inference_mode(), autocast:
            res4 = first.net.forward_trunk(x)["res4"]
            return {b: enc.net.res5(res4).float() for b, enc in self.encoders.items()}

    def _run(self, batch: list[tuple[int, int, torch.Tensor]]) -> None:
        maps = self._forward(torch.stack([clip for _, _, clip in batch]))
        for branch, fmap in maps.items():
            pooled = fmap.mean(dim=(2, 3, 4)).cpu().numpy()
            if not np.isfinite(pooled).all():  # never write NaN / inf features
                videos = sorted({self.jobs[index].rel for index, _, _ in batch})
                raise ConstclError(
                    f"non-finite {branch} features from checkpoint {self.settings.checkpoint!r} "
                    f"for {videos[:3]} (precision {self.settings.precision}; try fp32)")
            dense = fmap.half().cpu().numpy() if self.settings.dense else None
            for k, (index, snippet, _) in enumerate(batch):
                state = self.videos[index]
                state["arrays"][branch][snippet] = pooled[k]
                if dense is not None:
                    if branch not in state["dense"]:
                        state["dense"][branch] = np.zeros(
                            (state["meta"]["snippets"], *dense.shape[1:]), np.float16)
                    state["dense"][branch][snippet] = dense[k]
        for index, _, _ in batch:
            self.videos[index]["left"] -= 1
        self.snippets += len(batch)
        for index in dict.fromkeys(index for index, _, _ in batch):
            self._finish_if_done(index)

    def _boxes(self, state: dict[str, Any], chunk: dict[str, Any]) -> None:
        frames, groups = chunk["frames"], chunk["groups"]  # (G, T, H, W, 3); rows per clip
        for lo in range(0, len(frames), self.settings.batch_size):
            part = groups[lo:lo + self.settings.batch_size]
            maps = self._forward(frames[lo:lo + self.settings.batch_size])
            h, w = frames.shape[2:4]
            boxes = [torch.as_tensor(np.asarray([b for _, b in g], np.float32)) for g in part]
            rois = boxes_to_rois(boxes, h, w).to(self.device)
            rows = [r for g in part for r, _ in g]
            for branch, fmap in maps.items():
                feats = detection_roi_features(fmap, rois).cpu().numpy()
                state["arrays"][f"{branch}.boxes"][rows] = feats
        state["box_groups_left"] -= len(groups)

    def _finish_if_done(self, index: int) -> None:
        state = self.videos.get(index)
        if state is None or state["left"] or state["box_groups_left"]:
            return
        arrays = dict(state["arrays"])
        arrays.update({f"{b}.res5": m for b, m in state["dense"].items()})
        self.writer.video(self.jobs[index], state["meta"], arrays)
        del self.videos[index]


def extract(settings: ExtractSettings) -> ExtractResult:
    """Extract features of ``settings.source`` into ``settings.out`` (module docstring).

    Raises FileNotFoundError / ValueError when the source, checkpoint or boxes file is
    unusable, ConstclError when OUT holds features made with other settings, and (with
    ``strict``) when any video is bad.
    """
    # ---------------------------------------------------------------- the videos
    skipped: list[tuple[str, str]] = []
    items, missing = resolve_source(settings.source, settings.root, skipped)
    if not items and not missing and not skipped:
        raise ValueError(f"{settings.source}: no videos found ({', '.join(VIDEO_EXTENSIONS)})")
    source = Path(settings.source)
    base = source if source.is_dir() else Path(settings.root or source.parent)
    boxes = read_box_rows(settings.boxes) if settings.boxes is not None else None
    jobs = plan_jobs(items, base, boxes)
    if boxes is not None:
        unknown = set(boxes) - {job.item.path.stem for job in jobs}
        if unknown:
            log.warning("%d video ids of %s match no video of the source, e.g. %s",
                        len(unknown), settings.boxes, sorted(unknown)[:3])
    # ---------------------------------------------------------------- the network
    grouped = dist.init_from_env()  # under torchrun (NCCL: "cuda" is then this rank's GPU)
    try:
        return _extract_jobs(settings, jobs, missing, skipped, grouped)
    finally:
        if grouped:
            dist.shutdown(wait=False)


def _extract_jobs(settings: ExtractSettings, jobs: list[Job], missing: list[str],
                  skipped: list[tuple[str, str]], grouped: bool) -> ExtractResult:
    """This process's share of the jobs (all of them without torchrun), then the summary."""
    rank, world = dist.rank(), dist.world_size()
    device = resolve_device(settings.device)
    encoders = {b: load_encoder(settings.checkpoint, b, settings.backbone,
                                input_norm=settings.input_norm, seed=settings.seed,
                                device=device) for b in settings.branches}
    out = Path(settings.out)
    # under torchrun, process 0 holds the folder's lock for the whole group
    with run_lock(out, "extract") if rank == 0 else contextlib.nullcontext():
        records = out / ".extract" / "records"
        records.mkdir(parents=True, exist_ok=True)
        _check_record(out, settings)
        mine = list(range(rank, len(jobs), world))
        _remove_partials(out, records, [jobs[i] for i in mine], settings)
        todo = [i for i in mine if not _is_done(out, records / f"{jobs[i].id}.json")]
        writer = _Writer(out, records, settings)
        _run(jobs, todo, len(mine), settings, encoders, device, writer)
        if grouped:  # every process's records are written
            torch.distributed.barrier()
        return _finish(out, jobs, records, missing, skipped, writer.written, settings,
                       write=rank == 0)


def _remove_partials(out: Path, records: Path, jobs: list[Job],
                     settings: ExtractSettings) -> None:
    """Delete the temporary files (``.NAME.PID.partial``) a killed run left for these videos'
    feature files and records (they are redone). One walk of OUT, whatever the number of
    videos; the partials of other processes' videos are left alone."""
    mine = {str(out / name) for job in jobs
            for name in output_files(job.rel, settings.branches, True, True).values()}
    mine |= {str(records / f"{job.id}.json") for job in jobs}
    for stale in out.rglob(".*.partial"):
        target = stale.with_name(stale.name[1:].rsplit(".", 2)[0])
        if str(target) in mine:
            stale.unlink()


def _run(jobs: list[Job], todo: list[int], total: int, settings: ExtractSettings,
         encoders: dict[str, Encoder], device: torch.device, writer: _Writer) -> None:
    from tqdm import tqdm

    data = VideoChunks([jobs[i] for i in todo], todo, settings)
    loader = DataLoader(data, batch_size=None, num_workers=settings.workers,
                        pin_memory=device.type == "cuda")
    batcher = _Batcher(encoders, settings, device, writer, jobs)
    bar = tqdm(total=total, initial=total - len(todo), unit="video", desc="extract",
               disable=not settings.progress, dynamic_ncols=True)
    start, done = time.perf_counter(), 0
    try:
        for chunk in loader:
            batcher.add(chunk)
            finished = writer.written + writer.failed - done
            if finished:
                bar.update(finished)
                done += finished
                rate = batcher.snippets / max(time.perf_counter() - start, 1e-9)
                bar.set_postfix_str(f"{rate:.1f} snippets/s")
        batcher.flush()
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    log.info("extracted %d snippets of %d videos in %.1f s (%.1f snippets/s)", batcher.snippets,
             writer.written, elapsed, batcher.snippets / max(elapsed, 1e-9))


def _finish(out: Path, jobs: list[Job], records: Path, missing: list[str],
            skipped: list[tuple[str, str]], written: int, settings: ExtractSettings,
            write: bool) -> ExtractResult:
    """index.jsonl and report.json from every video's record (process 0 writes them)."""
    loaded = [json.loads(p.read_text()) if (p := records / f"{job.id}.json").is_file() else None
              for job in jobs]
    report = source_report([r["check"] for r in loaded if r is not None], missing, skipped)
    index = out / "index.jsonl"
    if write:
        _write_json(out / "report.json", report)
        tmp = index.with_name(f".{index.name}.{os.getpid()}.partial")
        with tmp.open("w") as f:
            for r in loaded:
                if r is not None and r["ok"]:
                    f.write(json.dumps(r["row"]) + "\n")
        os.replace(tmp, index)
    bad = [(b["path"], b["reason"]) for b in report["bad"]]
    ok = sum(1 for r in loaded if r is not None and r["ok"])
    log.info("%d of %d videos extracted into %s (%d now), %d bad%s", ok, len(report["files"]),
             out, written, len(bad), f" (listed in {out / 'report.json'})" if bad else "")
    if bad and settings.strict:
        raise ConstclError(f"{len(bad)} of {len(report['files'])} videos are bad (--strict), "
                           f"e.g. {bad[0][0]}: {bad[0][1]}; all listed in {out / 'report.json'}")
    return ExtractResult(len(report["files"]), written, ok - written, bad, index)
