"""``constcl data prepare SRC OUT``: transcode a video source once into a training-ready copy.

The work is :func:`constcl.data.prepare.prepare` (what is written, how a rerun resumes, what
happens to bad inputs). Exit code 0 when the run finished, bad inputs included (they are listed in
``OUT/report.json``); 2 when SRC or OUT is unusable (OUT inside SRC or the reverse, OUT in use by
another process, OUT that cannot be written: disk full, file-size limit, permissions), printed
as one ``constcl: error:`` line; an output fault records nothing against the source, so the
same command completes every video once it is fixed.
"""

from __future__ import annotations

import argparse
import os
import re

from constcl.data.prepare import EncodeSettings, PrepareSettings, prepare

__all__ = ["add_arguments", "run", "parse_size"]

_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "KI": 2**10, "MI": 2**20, "GI": 2**30}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``500MB``, ``1.5G`` or ``2GiB``."""
    match = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]I?)?B?\s*", text.upper())
    if not match:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500MB, 2GB)")
    return int(float(match.group(1)) * _UNITS[match.group(2) or ""])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="folder of videos (class sub-folders allowed), .csv or .txt")
    parser.add_argument("out", help="output folder (a rerun into it resumes)")
    parser.add_argument("--short-side", type=int, default=256,
                        help="scale frames down so the short side is this (0: keep the size)")
    parser.add_argument("--max-fps", type=float, default=0.0,
                        help="cap the frame rate (0: keep the source rate)")
    parser.add_argument("--keyframe-seconds", type=float, default=1.0,
                        help="longest time between key frames (a seek lands at most this far "
                             "before a clip)")
    parser.add_argument("--crf", type=int, default=23, help="x264 quality (lower: better, larger)")
    parser.add_argument("--preset", default="veryfast", help="x264 preset (encoding speed)")
    parser.add_argument("--no-fast-decode", action="store_true",
                        help="do not use x264's tune=fastdecode (smaller files, slower decoding)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="parallel processes")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--shards", type=int, default=0,
                       help="write this many WebDataset tar shards instead of loose files")
    group.add_argument("--shard-size", type=parse_size, default=0,
                       help="or write shards of about this size (e.g. 1GB)")
    parser.add_argument("--root", default=None,
                        help="folder that CSV / list entries are relative to (default: the "
                             "list's folder)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    encode = EncodeSettings(short_side=args.short_side, max_fps=args.max_fps,
                            keyframe_seconds=args.keyframe_seconds, crf=args.crf,
                            preset=args.preset, fast_decode=not args.no_fast_decode)
    result = prepare(PrepareSettings(args.source, args.out, root=args.root, encode=encode,
                                     workers=args.workers, shards=args.shards,
                                     shard_bytes=args.shard_size,
                                     progress=not args.no_progress))
    print(f"{result.total - result.bad} of {result.total} videos ready ({result.written} "
          f"processed now, {result.reused} done before), {result.bad} bad (see "
          f"{args.out}/report.json)")
    print(f"train on it with: data.source={result.data_source}")
    return 0
