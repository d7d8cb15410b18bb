"""Report which videos of a source are usable (behind ``constcl data check``).

Each file is opened, its header read and its first and last frames decoded (``decode.verify``),
which catches unreadable, audio-only, zero-frame and truncated files without decoding everything.
Folders are scanned following symbolic links; a link that loops or dangles is reported as bad
with the reason.
Report of :func:`check_source`: ``{"ok": <count>, "bad": [{"path", "reason"}, ...],
"files": [per-file dicts]}``, per file ``path, ok, reason, duration, fps, width, height,
num_frames``.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

from constcl.data.decode import VideoError, verify
from constcl.data.sources import VIDEO_EXTENSIONS, resolve_source

__all__ = ["check_file", "check_source", "source_report"]


def check_file(path: str) -> dict:
    """One file's report: path, ok, reason ('' when ok), duration, fps, width, height,
    num_frames (None where unknown)."""
    report = {
        "path": path,
        "ok": False,
        "reason": "",
        "duration": None,
        "fps": None,
        "width": None,
        "height": None,
        "num_frames": None,
    }
    try:
        info = verify(path)
    except VideoError as err:
        report["reason"] = err.reason
    except Exception as err:  # noqa: BLE001 - a report must cover every failure
        report["reason"] = f"unexpected error ({type(err).__name__}: {err})"
    else:
        report.update(
            ok=True,
            duration=round(info.duration, 3),
            fps=round(info.fps, 3),
            width=info.width,
            height=info.height,
            num_frames=info.num_frames,
        )
    return report


def check_source(path: str, workers: int = 1, root: str | None = None) -> dict:
    """Scan a source; returns the JSON-ready report. Raises FileNotFoundError / ValueError
    when the source itself is unusable (missing, unknown type, or no video in it)."""
    skipped: list[tuple[str, str]] = []
    items, missing = resolve_source(path, root, skipped)
    if not items and not missing and not skipped:
        kinds = ", ".join(VIDEO_EXTENSIONS)
        raise ValueError(f"{path}: no videos found ({kinds}); nothing to check")
    paths = [str(item.path) for item in items]
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            try:
                files = list(pool.map(check_file, paths,
                                      chunksize=max(1, len(paths) // (4 * workers))))
            except BaseException:  # Ctrl-C, SIGTERM: do not check the remaining files first
                pool.shutdown(wait=True, cancel_futures=True)
                raise
    else:
        files = [check_file(p) for p in paths]
    return source_report(files, missing, skipped)


def source_report(files: list[dict], missing: list[str],
                  skipped: list[tuple[str, str]]) -> dict:
    """The JSON-ready report of a source: the :func:`check_file` reports ``files``, then one
    bad entry per missing file and per entry the listing skipped (``(path, reason)``)."""
    unknown = dict.fromkeys(("duration", "fps", "width", "height", "num_frames"))
    files = files + [{"path": m, "ok": False, "reason": "missing file", **unknown}
                     for m in missing]
    files += [{"path": p, "ok": False, "reason": reason, **unknown} for p, reason in skipped]
    bad = [{"path": f["path"], "reason": f["reason"]} for f in files if not f["ok"]]
    return {"ok": len(files) - len(bad), "bad": bad, "files": files}
