"""Draw the two views the model would see of one video (behind ``constcl data preview``).

One row per view: every ``every``-th frame of the clip after the geometric *and* photometric
augmentations, with the view's K boxes drawn on the key frame (dashed for invalid boxes).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from constcl.data.augment import PhotometricAugment, from_model_range
from constcl.data.dataset import TooManyBadVideos, TwoViewDataset
from constcl.data.decode import VideoError
from constcl.data.sources import VideoItem, find_box_file

__all__ = ["draw_views", "preview_video", "sample_views"]


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
        images = from_model_range(clip).permute(1, 2, 3, 0).cpu().numpy()  # (T, S, S, 3)
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


@contextlib.contextmanager
def _no_bad_video_warning() -> Iterator[None]:
    """Drop the data set's "skipping bad video" warning for the one video previewed."""
    logger = logging.getLogger("constcl.data.dataset")

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("skipping bad video")

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


def sample_views(
    video: str | Path,
    *,
    seed: int = 0,
    size: int = 224,
    frames: int = 16,
    stride: int = 2,
    regions: str = "random",
    num_regions: int = 8,
    boxes_dir: str | None = None,
) -> tuple[dict, dict[str, torch.Tensor]]:
    """The training sample of ``video`` and its two photometrically augmented views.

    Returns ``(sample, {"a": clip, "b": clip})``: the data set's sample (boxes and masks of
    each view) and per view a float (3, frames, size, size) clip in [-1, 1]. Raises
    :class:`VideoError` when the video cannot be used.
    """
    video = Path(video)
    item = VideoItem(video, boxes_path=find_box_file(video, boxes_dir))
    dataset = TwoViewDataset(
        [item],
        clip_frames=frames,
        frame_stride=stride,
        size=size,
        num_regions=num_regions,
        region_generator=regions,
        seed=seed,
        max_bad_fraction=0.0,
        max_retries=0,
    )
    try:
        with _no_bad_video_warning():  # the error below says it; once is enough
            sample = dataset[0]
    except TooManyBadVideos:
        reason = "; ".join(r for _, r in dataset.bad_files())
        raise VideoError(video, reason) from None
    generator = torch.Generator().manual_seed(seed)
    views = {
        v: PhotometricAugment.for_view(v)(sample[f"view_{v}"][None], generator)[0] for v in "ab"
    }
    return sample, views


def preview_video(
    video: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    size: int = 224,
    frames: int = 16,
    stride: int = 2,
    regions: str = "random",
    num_regions: int = 8,
    boxes_dir: str | None = None,
    every: int = 2,
) -> dict[str, int]:
    """Draw the two views of ``video`` (see :func:`sample_views`) into the image ``out``.

    Returns the number of valid boxes per view, ``{"a": n_a, "b": n_b}``. Raises
    :class:`VideoError` when the video cannot be used and ValueError for a size, frame count,
    stride, box count or ``every`` below 1.
    """
    for name, value in (("size", size), ("frames", frames), ("stride", stride),
                        ("num_regions", num_regions), ("every", every)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1; got {value}")
    sample, views = sample_views(video, seed=seed, size=size, frames=frames, stride=stride,
                                 regions=regions, num_regions=num_regions, boxes_dir=boxes_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    draw_views(sample, views, out, every=max(1, every))
    return {v: int(np.count_nonzero(sample[f"mask_{v}"])) for v in "ab"}
