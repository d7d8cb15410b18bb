"""``constcl data preview VIDEO --out FILE.png``: draw the two views the model would see.

One row per view: every ``--every``-th frame of the clip after the geometric *and* photometric
augmentations, with the view's K boxes drawn on the key frame (dashed for invalid boxes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from constcl.data.augment import PhotometricAugment
from constcl.data.dataset import TooManyBadVideos, TwoViewDataset
from constcl.data.regions import REGION_GENERATORS
from constcl.data.sources import VideoItem, find_box_file

__all__ = ["add_arguments", "run", "draw_views"]


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


def draw_views(sample: dict, views: dict[str, torch.Tensor], out: Path, every: int = 2) -> None:
    """Save a figure: per view a strip of frames (3, T, S, S float in [-1, 1]) with the boxes
    of the sample drawn on the key frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    t = next(iter(views.values())).shape[1]
    shown = list(range(0, t, every))
    key = t // 2
    if key not in shown:
        shown = sorted(shown + [key])
    fig, axes = plt.subplots(
        len(views), len(shown), figsize=(1.6 * len(shown), 1.8 * len(views)), squeeze=False
    )
    for row, (name, clip) in enumerate(views.items()):
        images = ((clip.clamp(-1, 1) + 1) / 2).permute(1, 2, 3, 0).cpu().numpy()  # (T, S, S, 3)
        size = images.shape[1]
        for col, frame in enumerate(shown):
            ax = axes[row, col]
            ax.imshow(images[frame])
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{name} t={frame}" + (" (key)" if frame == key else ""), fontsize=7)
            if frame != key:
                continue
            boxes, mask = sample[f"boxes_{name}"].numpy(), sample[f"mask_{name}"].numpy()
            for (x1, y1, x2, y2), valid in zip(boxes * size, mask, strict=True):
                ax.add_patch(
                    Rectangle(
                        (x1, y1),
                        x2 - x1,
                        y2 - y1,
                        fill=False,
                        linewidth=1.2,
                        edgecolor="yellow" if valid else "grey",
                        linestyle="-" if valid else "--",
                    )
                )
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    video = Path(args.video)
    item = VideoItem(video, boxes_path=find_box_file(video, args.boxes_dir))
    dataset = TwoViewDataset(
        [item],
        clip_frames=args.frames,
        frame_stride=args.stride,
        size=args.size,
        num_regions=args.num_regions,
        region_generator=args.regions,
        seed=args.seed,
        max_bad_fraction=0.0,
        max_retries=0,
    )
    try:
        sample = dataset[0]
    except TooManyBadVideos:
        reason = "; ".join(r for _, r in dataset.bad_files())
        print(f"constcl data preview: cannot use {video}: {reason}", file=sys.stderr)
        return 1
    generator = torch.Generator().manual_seed(args.seed)
    views = {
        v: PhotometricAugment.for_view(v)(sample[f"view_{v}"][None], generator)[0] for v in "ab"
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_views(sample, views, out, every=max(1, args.every))
    valid = {v: int(np.count_nonzero(sample[f"mask_{v}"])) for v in "ab"}
    print(f"wrote {out} (valid boxes: a {valid['a']}, b {valid['b']})")
    return 0
