"""Transcode a video source once into a training-ready copy (behind ``constcl data prepare``).

Each source video (folder, CSV or list: whatever ``data.source`` accepts) is checked exactly as
``constcl data check`` does (:func:`constcl.data.check.check_file`), then re-encoded with PyAV:
H.264 (libx264, ``tune=fastdecode``), the short side scaled down to ``short_side`` (default 256,
never up), the frame rate kept or capped at ``max_fps``, a key frame at least every
``keyframe_seconds`` (so a seek lands at most that far before a clip) and no audio. Frames are
taken on the nominal grid of :mod:`constcl.data.decode`: output frame ``i`` is the source frame
that ``decode_frames(source, [i])`` returns at the output rate, so a variable-frame-rate source
becomes a constant-rate file that decodes to the same frames.

Output folder ``OUT``::

    OUT/prepare.json           the encoding settings (a rerun with other settings is refused)
    OUT/videos/<class>/<stem>.mp4
    OUT/manifest.csv           path,label,class_name,duration,fps,width,height,num_frames,source
    OUT/report.json            the `data check --json` report of the source (ok, bad, files)
    OUT/.prepare/records/      one JSON record per finished source video (ok or bad)
    OUT/shards/                with shards: shard-000000.tar ... and index.json (see shards.py)

``manifest.csv`` is a ``path,label`` CSV (paths relative to OUT), so ``data.source=
OUT/manifest.csv`` trains on the copy; integer labels and class names are carried over as they
are (a Kinetics ``label`` column would be renumbered by sorted class name).

Resumability: a video is written to ``<name>.<pid>.partial`` and renamed when complete, then
its record is written; a rerun skips every video with a record (and its output, for good ones),
deletes left-over ``.partial`` files and redoes those videos. Bad inputs (unreadable, zero-length,
audio-only, truncated, or failing to transcode) get a record with the reason and never reach the
manifest or the shards.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import logging
import math
import os
import shutil
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from constcl.data.check import check_file, source_report
from constcl.data.decode import VideoError
from constcl.data.sources import VIDEO_EXTENSIONS, VideoItem, resolve_source
from constcl.errors import ConstclError

__all__ = ["EncodeSettings", "PrepareSettings", "PrepareResult", "prepare", "transcode"]

log = logging.getLogger(__name__)

# write errors that stop `prepare` (a rerun resumes) instead of marking the input bad
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)

MANIFEST_COLUMNS = ("path", "label", "class_name", "duration", "fps", "width", "height",
                    "num_frames", "source")


@dataclass(frozen=True)
class EncodeSettings:
    """How each video is re-encoded (all of it is recorded in ``OUT/prepare.json``).

    Attributes:
        short_side: scale frames down so the short side is this many pixels (0: keep size).
        max_fps: cap the frame rate (0: keep the source rate).
        keyframe_seconds: longest time between two key frames.
        crf: x264 constant rate factor (lower: better quality, larger files).
        preset: x264 preset (encoding speed vs. size; decoding speed is unaffected).
        fast_decode: x264 ``tune=fastdecode`` (no CABAC / deblocking: larger files that decode
            faster).
    """

    short_side: int = 256
    max_fps: float = 0.0
    keyframe_seconds: float = 1.0
    crf: int = 23
    preset: str = "veryfast"
    fast_decode: bool = True

    def __post_init__(self) -> None:
        if self.short_side < 0 or self.short_side == 1:
            raise ValueError(f"short_side must be 0 (keep) or >= 2, got {self.short_side}")
        if self.max_fps < 0 or self.keyframe_seconds <= 0:
            raise ValueError("max_fps must be >= 0 and keyframe_seconds > 0")
        if not 0 <= self.crf <= 51:
            raise ValueError(f"crf must be in [0, 51], got {self.crf}")


@dataclass(frozen=True)
class PrepareSettings:
    """``constcl data prepare SRC OUT`` options.

    Attributes:
        source: folder, CSV or list (as ``data.source``).
        out: output folder.
        root: folder that list entries are relative to (None: the list's folder).
        encode: re-encoding settings.
        workers: parallel processes.
        shards: write this many WebDataset shards instead of loose files (0: loose files).
        shard_bytes: or start a new shard when one reaches this size (0: unused).
        progress: show a progress bar with ETA.
    """

    source: str
    out: str
    root: str | None = None
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    workers: int = 1
    shards: int = 0
    shard_bytes: int = 0
    progress: bool = True


@dataclass(frozen=True)
class PrepareResult:
    """What a run did: videos in the source, written now, already done before, bad in total;
    and what to pass as ``data.source``."""

    total: int
    written: int
    reused: int
    bad: int
    data_source: str


@dataclass(frozen=True)
class _Job:
    source: str
    output: str  # relative to OUT
    label: int | None
    class_name: str | None

    @property
    def id(self) -> str:
        return hashlib.sha1(os.path.abspath(self.source).encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------- one video


def transcode(src: str | Path, dst: str | Path, enc: EncodeSettings) -> int:
    """Re-encode ``src`` into the mp4 ``dst`` (see the module docstring); returns the number of
    frames written. Raises :class:`VideoError` when ``src`` cannot be decoded or has no frame."""
    import av

    try:
        with av.open(str(src)) as inp, av.open(str(dst), mode="w", format="mp4") as out:
            if not inp.streams.video:
                raise VideoError(src, "no video stream")
            return _transcode_stream(inp, out, enc, src)
    except av.FFmpegError as err:
        if getattr(err, "errno", None) in _OUTPUT_ERRNOS:  # the output side, not the input
            raise OSError(err.errno, f"cannot write {dst}: {err}") from err
        raise VideoError(src, f"transcoding failed ({type(err).__name__}: {err})") from err


def _even(x: float) -> int:
    return max(2, 2 * round(x / 2))


def _transcode_stream(inp, out, enc: EncodeSettings, src) -> int:
    from av.video.reformatter import VideoReformatter

    stream = inp.streams.video[0]
    stream.thread_count = 1  # parallelism comes from the worker processes
    rate = Fraction(stream.average_rate or stream.guessed_rate or stream.base_rate or 0)
    if rate <= 0:
        raise VideoError(src, "unknown frame rate")
    fps = rate if not enc.max_fps or rate <= enc.max_fps else \
        Fraction(enc.max_fps).limit_denominator(1001)
    options = {"crf": str(enc.crf), "preset": enc.preset, "threads": "1"}
    if enc.fast_decode:
        options["tune"] = "fastdecode"
    ostream = out.add_stream("libx264", rate=fps, options=options)
    ostream.codec_context.gop_size = max(1, math.floor(fps * Fraction(enc.keyframe_seconds)))
    ostream.codec_context.time_base = 1 / fps
    tb, start = stream.time_base, stream.start_time or 0
    reformatter, size, written = VideoReformatter(), None, 0
    prev, prev_time = None, None

    def emit(frame) -> None:
        nonlocal written
        image = reformatter.reformat(frame, width=size[0], height=size[1], format="yuv420p",
                                     interpolation="AREA", threads=1)
        image.pts, image.time_base = written, 1 / fps
        out.mux(ostream.encode(image))
        written += 1

    for frame in inp.decode(stream):
        time = Fraction(frame.pts - start) * tb if frame.pts is not None else \
            (Fraction(0) if prev_time is None else prev_time + 1 / rate)
        if size is None:
            size = _output_size(frame.width, frame.height, enc.short_side)
            ostream.width, ostream.height, ostream.pix_fmt = size[0], size[1], "yuv420p"
        while time > Fraction(written) / fps + tb:  # grid points shown before this frame
            emit(prev if prev is not None else frame)
        prev, prev_time = frame, time
    if prev is None:
        raise VideoError(src, "zero frames")
    while Fraction(written) / fps < prev_time + 1 / rate:  # the last frame's display time
        emit(prev)
    out.mux(ostream.encode(None))
    return written


def _output_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height), even, with the short side scaled down to ``short_side`` (0: keep)."""
    scale = 1.0 if not short_side or min(width, height) <= short_side \
        else short_side / min(width, height)
    return _even(width * scale), _even(height * scale)


def _prepare_one(job: _Job, out_dir: str, enc: EncodeSettings) -> dict:
    """Check, transcode and verify one video; returns its record (never raises for bad input)."""
    check = check_file(job.source)
    record = {"job": asdict(job), "check": check, "output": None}
    if not check["ok"]:
        return record
    final = Path(out_dir) / job.output
    final.parent.mkdir(parents=True, exist_ok=True)
    partial = final.with_name(f"{final.name}.{os.getpid()}.partial")  # one per process
    try:
        transcode(job.source, partial, enc)
    except Exception as err:  # noqa: BLE001 - any input-caused failure is a bad input
        partial.unlink(missing_ok=True)
        if isinstance(err, OSError) and not isinstance(err, VideoError):
            raise  # the output side (disk full, permissions): stop, a rerun resumes
        reason = err.reason if isinstance(err, VideoError) else \
            f"transcoding failed ({type(err).__name__}: {err})"
        check.update(ok=False, reason=reason)
        return record
    result = check_file(str(partial))
    if not result["ok"]:
        partial.unlink(missing_ok=True)
        check.update(ok=False, reason=f"transcoded copy unusable ({result['reason']})")
        return record
    os.replace(partial, final)
    result["path"] = job.output
    record["output"] = result
    return record


# ---------------------------------------------------------------------------- whole source


def _plan(items: list[VideoItem]) -> list[_Job]:
    """One job per source video; output ``videos/<class>/<stem>.mp4``, with ``-<id>`` added to
    names that two sources would share."""
    jobs = []
    for item in items:
        folder = "videos" if not item.label_name else \
            f"videos/{item.label_name.replace('/', '_').replace(os.sep, '_')}"
        stem = item.path.stem.replace(".", "_")
        jobs.append(_Job(str(item.path), f"{folder}/{stem}.mp4", item.label, item.label_name))
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.output] = counts.get(job.output, 0) + 1
    return [job if counts[job.output] == 1 else
            _Job(job.source, job.output[:-4] + f"-{job.id[:8]}.mp4", job.label, job.class_name)
            for job in jobs]


def _check_settings(out: Path, enc: EncodeSettings) -> None:
    """Write ``prepare.json``, or refuse when it holds other encoding settings."""
    path = out / "prepare.json"
    wanted = {"encode": asdict(enc)}
    if path.exists():
        found = json.loads(path.read_text())
        if found.get("encode") != wanted["encode"]:
            raise ConstclError(f"{out} was prepared with other settings ({found.get('encode')}); "
                               f"use the same options to resume, or another output folder")
        return
    _write_json(path, wanted)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def _is_done(out: Path, record_path: Path) -> bool:
    if not record_path.exists():
        return False
    output = json.loads(record_path.read_text())["output"]
    return output is None or (out / output["path"]).is_file()


def prepare(settings: PrepareSettings) -> PrepareResult:
    """Prepare ``settings.source`` into ``settings.out`` (see the module docstring).

    Raises FileNotFoundError / ValueError when the source itself is unusable, and
    :class:`ConstclError` when OUT holds a copy made with other encoding settings.
    """
    skipped: list[tuple[str, str]] = []
    items, missing = resolve_source(settings.source, settings.root, skipped)
    if not items and not missing and not skipped:
        raise ValueError(f"{settings.source}: no videos found ({', '.join(VIDEO_EXTENSIONS)})")
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, settings.encode)
    jobs = _plan(items)
    if settings.shards or settings.shard_bytes:
        from constcl.data.shards import shards_complete

        if shards_complete(out, [job.id for job in jobs], settings.shards, settings.shard_bytes):
            log.info("%s: shards complete; nothing to do", out)
            return _result(out, jobs, 0, settings)
    records = out / ".prepare" / "records"
    records.mkdir(parents=True, exist_ok=True)
    for stale in (out / "videos").rglob("*.partial") if (out / "videos").exists() else []:
        stale.unlink()  # a video a killed run did not finish: redone below
    todo = [job for job in jobs if not _is_done(out, records / f"{job.id}.json")]
    _run_jobs(todo, len(jobs), out, records, settings)
    report = _write_outputs(out, jobs, records, missing, skipped)
    log.info("%d of %d videos ready, %d bad (reasons in %s)", report["ok"], len(jobs) + len(missing)
             + len(skipped), len(report["bad"]), out / "report.json")
    if settings.shards or settings.shard_bytes:
        from constcl.data.shards import write_shards

        write_shards(out, _manifest_rows(out, jobs, records), settings.shards,
                     settings.shard_bytes, [job.id for job in jobs])
        shutil.rmtree(out / "videos", ignore_errors=True)
        (out / "manifest.csv").unlink(missing_ok=True)
    return _result(out, jobs, len(todo), settings)


def _result(out: Path, jobs: list[_Job], written: int, settings: PrepareSettings
            ) -> PrepareResult:
    report = json.loads((out / "report.json").read_text())
    sharded = settings.shards or settings.shard_bytes
    return PrepareResult(len(report["files"]), written, len(jobs) - written, len(report["bad"]),
                         str(out / ("shards" if sharded else "manifest.csv")))


def _run_jobs(todo: list[_Job], total: int, out: Path, records: Path,
              settings: PrepareSettings) -> None:
    """Run the jobs over ``settings.workers`` processes, writing each record as it finishes."""
    from tqdm import tqdm

    bar = tqdm(total=total, initial=total - len(todo), unit="video", desc="prepare",
               disable=not settings.progress, dynamic_ncols=True)
    try:
        if settings.workers <= 1:
            for job in todo:
                _write_json(records / f"{job.id}.json", _prepare_one(job, str(out),
                                                                      settings.encode))
                bar.update()
            return
        with ProcessPoolExecutor(max_workers=settings.workers) as pool:
            futures = {pool.submit(_prepare_one, job, str(out), settings.encode): job
                       for job in todo}
            for future in as_completed(futures):
                _write_json(records / f"{futures[future].id}.json", future.result())
                bar.update()
    finally:
        bar.close()


def _load(records: Path, job: _Job) -> dict:
    return json.loads((records / f"{job.id}.json").read_text())


def _manifest_rows(out: Path, jobs: list[_Job], records: Path) -> list[dict]:
    rows = []
    for job in jobs:
        record = _load(records, job)
        output = record["output"]
        if output is None:
            continue
        rows.append({"path": output["path"], "label": "" if job.label is None else job.label,
                     "class_name": job.class_name or "", "duration": output["duration"],
                     "fps": output["fps"], "width": output["width"], "height": output["height"],
                     "num_frames": output["num_frames"], "source": job.source, "id": job.id})
    return rows


def _write_outputs(out: Path, jobs: list[_Job], records: Path, missing: list[str],
                   skipped: list[tuple[str, str]]) -> dict:
    """``report.json`` (the `data check` report of the source) and ``manifest.csv``."""
    report = source_report([_load(records, job)["check"] for job in jobs], missing, skipped)
    _write_json(out / "report.json", report)
    tmp = out / "manifest.csv.tmp"
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, MANIFEST_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(_manifest_rows(out, jobs, records))
    os.replace(tmp, out / "manifest.csv")
    return report
