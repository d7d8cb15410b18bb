"""``constcl data preview VIDEO --out FILE.png``: draw the two views the model would see.

One row per view: every ``--every``-th frame of the clip after the geometric *and* photometric
augmentations, with the view's K boxes drawn on the key frame (dashed for invalid boxes). The
drawing is :func:`constcl.data.preview.preview_video`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl.data.preview import preview_video
from constcl.data.regions import REGION_GENERATORS

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video", help="a video file")
    parser.add_argument("--out", required=True, help="output image, e.g. preview.png")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sampled views")
    parser.add_argument("--size", type=int, default=224, help="crop side in pixels")
    parser.add_argument("--frames", type=int, default=16, help="frames per clip")
    parser.add_argument("--stride", type=int, default=2, help="temporal stride")
    parser.add_argument(
        "--regions", default="random", choices=REGION_GENERATORS, help="region generator"
    )
    parser.add_argument("--num-regions", type=int, default=8, help="boxes per view (K)")
    parser.add_argument("--boxes-dir", default=None, help="folder of box files (detections)")
    parser.add_argument("--every", type=int, default=2, help="draw every n-th frame")


def run(args: argparse.Namespace) -> int:
    """A video that cannot be used raises ``VideoError`` (a ``ConstclError``), which
    ``constcl.cli.main`` prints as one ``constcl: error:`` line with exit code 2."""
    out = Path(args.out)
    valid = preview_video(args.video, out, seed=args.seed, size=args.size,
                          frames=args.frames, stride=args.stride, regions=args.regions,
                          num_regions=args.num_regions, boxes_dir=args.boxes_dir,
                          every=args.every)
    print(f"wrote {out} (valid boxes: a {valid['a']}, b {valid['b']})")
    return 0
