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

Resumability: a video is written to ``.<id>.<pid>.partial`` (a short name, whatever the
source's name) and renamed when complete, then its record is written; a rerun skips every video
with a record (and its output, for good ones), deletes left-over ``.partial`` files and redoes
those videos. Bad inputs (unreadable, zero-length, audio-only, truncated, or failing to
transcode) get a record with the reason and never reach the manifest or the shards. Output
names longer than the file system allows (255 bytes) are shortened, with the id added.

Faults of the output side are not the source's: no space, a file-size limit, a name too long,
no permission or a read-only file system (:data:`_OUTPUT_ERRNOS`) stop the run with one
:class:`~constcl.errors.OutputError` naming the output path, and nothing is recorded against
the source, so the same command after the fault is fixed completes every video. OUT may not be
SOURCE, lie inside SOURCE (a rerun would take in its own output) or contain it; one process at
a time may write OUT (``runlock``).
"""

from __future__ import annotations

import contextlib
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
from constcl.errors import ConstclError, OutputError, writing
from constcl.runlock import run_lock

__all__ = ["EncodeSettings", "PrepareSettings", "PrepareResult", "prepare", "transcode"]

log = logging.getLogger(__name__)

# write errors that stop `prepare` (a rerun resumes) instead of marking the input bad
# (ENOTDIR / EEXIST / EISDIR: a file or folder in the way of an output path)
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                  errno.EFBIG, errno.ENAMETOOLONG, errno.ENOTDIR, errno.EEXIST, errno.EISDIR)
NAME_MAX = 255  # bytes of one file name (ext4, xfs, btrfs, NFS ...)

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
        if not (math.isfinite(self.max_fps) and math.isfinite(self.keyframe_seconds)) \
                or self.max_fps < 0 or self.keyframe_seconds <= 0:
            raise ValueError(f"max_fps must be a finite number >= 0 and keyframe_seconds one "
                             f"> 0; got {self.max_fps}, {self.keyframe_seconds}")
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
        code = getattr(err, "errno", None)
        if code in _OUTPUT_ERRNOS or getattr(err, "filename", None) == str(dst):
            raise OSError(code, getattr(err, "strerror", None) or str(err), str(dst)) from err
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


def output_error(path: str | Path, err: OSError, source: str | None = None) -> OutputError:
    """One line naming the output ``path`` (not a temporary name) for an output-side fault."""
    what = err.strerror or str(err)
    code = f" [Errno {err.errno}]" if err.errno else ""
    blame = f"; nothing was recorded against {source}" if source else ""
    return OutputError(f"cannot write {path}: {what}{code}{blame}; fix the output side (space, "
                       "size limit, permissions) and run the same command again to resume")


def _is_output_fault(err: BaseException) -> bool:
    return isinstance(err, OSError) and not isinstance(err, ConstclError) \
        and err.errno in _OUTPUT_ERRNOS


def _prepare_one(job: _Job, out_dir: str, enc: EncodeSettings) -> dict:
    """Check, transcode and verify one video; returns its record (never raises for bad input).

    Raises :class:`OutputError` (and records nothing) when the output side fails."""
    check = check_file(job.source)
    record = {"job": asdict(job), "check": check, "output": None}
    if not check["ok"]:
        return record
    final = Path(out_dir) / job.output
    partial = final.with_name(f".{job.id}.{os.getpid()}.partial")  # short, one per process
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        transcode(job.source, partial, enc)
        result = check_file(str(partial))
        if result["ok"]:
            os.replace(partial, final)
    except Exception as err:  # noqa: BLE001 - any input-caused failure is a bad input
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        if _is_output_fault(err):  # disk full, size limit, permissions: stop, a rerun resumes
            raise output_error(final, err, job.source) from err
        if isinstance(err, OSError) and not isinstance(err, VideoError):
            raise
        reason = err.reason if isinstance(err, VideoError) else \
            f"transcoding failed ({type(err).__name__}: {err})"
        check.update(ok=False, reason=reason)
        return record
    if not result["ok"]:
        partial.unlink(missing_ok=True)
        check.update(ok=False, reason=f"transcoded copy unusable ({result['reason']})")
        return record
    result["path"] = job.output
    record["output"] = result
    return record


# ---------------------------------------------------------------------------- whole source


def fit_name(stem: str, suffix: str, tag: str, limit: int = NAME_MAX) -> str:
    """``stem + suffix``, or when that is longer than ``limit`` bytes (UTF-8), the stem cut at
    a character boundary plus ``-<tag>`` so that it fits (and stays unique)."""
    if len((stem + suffix).encode()) <= limit:
        return stem + suffix
    room = limit - len(f"-{tag}{suffix}".encode())
    cut = stem.encode()[:room].decode(errors="ignore")
    return f"{cut}-{tag}{suffix}"


def _plan(items: list[VideoItem]) -> list[_Job]:
    """One job per source video; output ``videos/<class>/<stem>.mp4``, with ``-<id>`` added to
    names that two sources would share, and names over :data:`NAME_MAX` bytes shortened."""
    jobs = []
    for item in items:
        job_id = _Job(str(item.path), "", None, None).id
        folder = "videos" if not item.label_name else "videos/" + fit_name(
            item.label_name.replace("/", "_").replace(os.sep, "_"), "", job_id[:8])
        name = fit_name(item.path.stem.replace(".", "_"), ".mp4", job_id[:8])
        jobs.append(_Job(str(item.path), f"{folder}/{name}", item.label, item.label_name))
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.output] = counts.get(job.output, 0) + 1
    out = []
    for job in jobs:
        if counts[job.output] > 1:
            folder, name = job.output.rsplit("/", 1)
            name = fit_name(name[:-4] + f"-{job.id[:8]}", ".mp4", job.id[8:16])
            job = _Job(job.source, f"{folder}/{name}", job.label, job.class_name)
        out.append(job)
    return out


def check_nesting(source: str | Path, out: str | Path) -> None:
    """Refuse OUT equal to SOURCE, OUT inside a SOURCE folder (a rerun would scan its own
    output as new videos) and SOURCE inside OUT (the run would write over what it reads)."""
    src, dst = Path(source).resolve(), Path(out).resolve()
    if src == dst or (src.is_dir() and src in dst.parents):
        where = "the source folder" if src == dst else "inside the source folder"
        raise ConstclError(f"output folder {out} is {where} {source}: a rerun would take in its "
                           f"own output as new videos; choose an output folder outside {source}")
    if dst in src.parents:
        raise ConstclError(f"source {source} is inside the output folder {out}; choose an "
                           "output folder that does not contain the source")


def _check_settings(out: Path, enc: EncodeSettings) -> None:
    """Write ``prepare.json``, or refuse when it holds other encoding settings."""
    path = out / "prepare.json"
    wanted = {"encode": asdict(enc)}
    if path.exists() and path.stat().st_size:
        found = json.loads(path.read_text())
        if found.get("encode") != wanted["encode"]:
            raise ConstclError(f"{out} was prepared with other settings ({found.get('encode')}); "
                               f"use the same options to resume, or another output folder")
        return
    _write_json(path, wanted)


def _write_json(path: Path, data: object) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with writing(path):
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, path)
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        if _is_output_fault(err):
            raise output_error(path, err) from err
        raise


def _is_done(out: Path, record_path: Path) -> bool:
    if not record_path.exists():
        return False
    output = json.loads(record_path.read_text())["output"]
    return output is None or (out / output["path"]).is_file()


def prepare(settings: PrepareSettings) -> PrepareResult:
    """Prepare ``settings.source`` into ``settings.out`` (see the module docstring).

    Raises FileNotFoundError / ValueError when the source itself is unusable,
    :class:`ConstclError` when OUT holds a copy made with other encoding settings or OUT and
    SOURCE are nested, :class:`~constcl.runlock.FolderLocked` when another process writes OUT,
    and :class:`OutputError` when OUT cannot be written.
    """
    check_nesting(settings.source, settings.out)
    skipped: list[tuple[str, str]] = []
    items, missing = resolve_source(settings.source, settings.root, skipped)
    if not items and not missing and not skipped:
        raise ValueError(f"{settings.source}: no videos found ({', '.join(VIDEO_EXTENSIONS)})")
    with run_lock(settings.out, "constcl data prepare"):
        return _prepare_locked(settings, items, missing, skipped)


def _prepare_locked(settings: PrepareSettings, items: list[VideoItem], missing: list[str],
                    skipped: list[tuple[str, str]]) -> PrepareResult:
    out = Path(settings.out)
    _check_settings(out, settings.encode)
    jobs = _plan(items)
    if settings.shards or settings.shard_bytes:
        from constcl.data.shards import shards_complete

        if shards_complete(out, [job.id for job in jobs], settings.shards, settings.shard_bytes):
            log.info("%s: shards complete; nothing to do", out)
            return _result(out, jobs, 0, settings)
    records = out / ".prepare" / "records"
    try:
        records.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        if _is_output_fault(err):
            raise output_error(records, err) from err
        raise
    for stale in (out / "videos").rglob("*.partial") if (out / "videos").exists() else []:
        stale.unlink()  # a video a killed run did not finish: redone below
    todo = [job for job in jobs if not _is_done(out, records / f"{job.id}.json")]
    _run_jobs(todo, len(jobs), out, records, settings)
    report = _write_outputs(out, jobs, records, missing, skipped)
    log.info("%d of %d videos ready, %d bad (reasons in %s)", report["ok"], len(jobs) + len(missing)
             + len(skipped), len(report["bad"]), out / "report.json")
    if settings.shards or settings.shard_bytes:
        from constcl.data.shards import write_shards

        try:  # the prepared videos are removed only after every shard is complete
            with writing(out / "shards"):
                write_shards(out, _manifest_rows(out, jobs, records), settings.shards,
                             settings.shard_bytes, [job.id for job in jobs])
        except OSError as err:
            if _is_output_fault(err):
                raise output_error(err.filename or out / "shards", err) from err
            raise
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
            try:
                for future in as_completed(futures):
                    _write_json(records / f"{futures[future].id}.json", future.result())
                    bar.update()
            except BaseException:  # an output fault, Ctrl-C: do not start the other videos
                pool.shutdown(wait=True, cancel_futures=True)
                raise
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
