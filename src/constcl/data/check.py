"""``constcl data check PATH [--json] [--workers N]``: report which videos of a source are usable.

Each file is opened, its header read and its first and last frames decoded (``decode.verify``),
which catches unreadable, audio-only, zero-frame and truncated files without decoding everything.
The exit code is 0 whenever the scan ran, bad files included (it is a report); 2 when PATH
itself is unusable.

JSON output: ``{"ok": <count>, "bad": [{"path", "reason"}, ...], "files": [per-file dicts]}``,
per file ``path, ok, reason, duration, fps, width, height, num_frames``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor

from constcl.data.decode import VideoError, verify
from constcl.data.sources import resolve_source

__all__ = ["add_arguments", "run", "check_file", "check_source"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="folder of videos (class sub-folders allowed), .csv or .txt")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    parser.add_argument(
        "--workers",
        type=int,
        default=min(8, os.cpu_count() or 1),
        help="parallel processes (1: scan in this process)",
    )
    parser.add_argument(
        "--root",
        default=None,
        help="folder that CSV / list entries are relative to (default: the list's folder)",
    )


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
    when the source itself is unusable."""
    items, missing = resolve_source(path, root)
    paths = [str(item.path) for item in items]
    if workers > 1 and len(paths) > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            files = list(pool.map(check_file, paths, chunksize=max(1, len(paths) // (4 * workers))))
    else:
        files = [check_file(p) for p in paths]
    files += [
        {
            "path": m,
            "ok": False,
            "reason": "missing file",
            "duration": None,
            "fps": None,
            "width": None,
            "height": None,
            "num_frames": None,
        }
        for m in missing
    ]
    bad = [{"path": f["path"], "reason": f["reason"]} for f in files if not f["ok"]]
    return {"ok": len(files) - len(bad), "bad": bad, "files": files}


def _print_table(report: dict) -> None:
    for f in report["files"]:
        if f["ok"]:
            print(
                f"ok   {f['path']}  {f['duration']:.2f}s  {f['fps']:.2f} fps  "
                f"{f['width']}x{f['height']}  {f['num_frames']} frames"
            )
        else:
            print(f"BAD  {f['path']}  {f['reason']}")
    print(f"{report['ok']} ok, {len(report['bad'])} bad")


def run(args: argparse.Namespace) -> int:
    try:
        report = check_source(args.path, workers=args.workers, root=args.root)
    except (FileNotFoundError, ValueError) as err:
        print(f"constcl data check: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        _print_table(report)
    return 0
