"""``constcl data synth OUT --videos N --seed S``: generate the synthetic world.

The generator is :func:`constcl.data.synth.generate_world`; see ``docs/synthetic_world.md``.
"""

from __future__ import annotations

import argparse
import os

from constcl.data.synth.world import TRACK_CHOICES, generate_world

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``constcl data synth``."""
    parser.add_argument("out", help="output folder (created; reused if it holds the same world)")
    parser.add_argument("--videos", type=int, default=500, help="number of videos (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="world seed; same seed, same files")
    parser.add_argument("--size", type=int, default=128, help="frame width = height in pixels")
    parser.add_argument("--frames", type=int, default=64, help="frames per video")
    parser.add_argument("--fps", type=int, default=25, help="frame rate of the mp4 files")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="processes rendering videos (default: all CPUs); does not change the output",
    )
    parser.add_argument(
        "--tracks",
        choices=TRACK_CHOICES,
        default="val",
        help="split that also gets DAVIS frames/masks and OTB sequences (they take most of "
        "the disk and time after the videos): val (default), all or none",
    )
    parser.add_argument("--force", action="store_true", help="regenerate even if up to date")


def run(args: argparse.Namespace) -> int:
    """Generate the world and print a one-line summary."""
    summary = generate_world(
        args.out,
        args.videos,
        args.seed,
        size=args.size,
        frames=args.frames,
        fps=args.fps,
        workers=args.workers,
        tracks=args.tracks,
        force=args.force,
    )
    c = summary.counts
    state = "up to date" if summary.reused else f"generated in {summary.seconds:.1f} s"
    print(
        f"{os.fspath(summary.root)}: {c['videos']} videos ({c['train_videos']} train, "
        f"{c['val_videos']} val), {len(summary.classes)} classes, {c['otb_sequences']} OTB "
        f"and {c['davis_sequences']} DAVIS sequences; {state}"
    )
    return 0
