"""Region boxes per view (docs/spec.md section 1): ``random``, ``cues`` and ``detections``.

Every generator returns K boxes as a float32 (K, 4) array of (x1, y1, x2, y2) normalised to the
*augmented* clip, plus a bool (K,) validity mask; invalid rows are zeros. A fixed K keeps
cross-process gathers static.

``cues`` is a learning-free proposal method in the manner of selective search (Uijlings et al.,
IJCV 2013): Felzenszwalb-Huttenlocher superpixels (scikit-image), then greedy hierarchical
merging of the most similar neighbouring regions, similarity = colour-histogram intersection +
size + fill; every region of the hierarchy is a proposal, ranked by its hierarchy level times a
random number (as in the original), filtered by size and near-duplicates.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from constcl.data.augment import CropParams, transform_boxes

__all__ = [
    "REGION_GENERATORS",
    "random_regions",
    "cue_proposals",
    "cue_regions",
    "detection_regions",
]

REGION_GENERATORS = ("random", "cues", "detections")
_BINS = 25  # colour-histogram bins per channel, as selective search


def _pad(boxes: np.ndarray, valid: np.ndarray, num: int) -> tuple[np.ndarray, np.ndarray]:
    """First ``num`` valid boxes, padded with zero rows marked invalid."""
    boxes = boxes[valid][:num]
    out = np.zeros((num, 4), dtype=np.float32)
    mask = np.zeros(num, dtype=bool)
    out[: len(boxes)], mask[: len(boxes)] = boxes, True
    return out, mask


def random_regions(num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random boxes (docs/spec.md section 1) in augmented-clip coordinates, all valid.

    x1, y1 ~ U(0, 1); w ~ U(0.1, 0.5); h = w * U(0.5, 2); x2 = min(x1 + w, 0.999),
    y2 = min(y1 + h, 0.999). All draws independent.
    """
    x1, y1 = rng.uniform(0, 1, num), rng.uniform(0, 1, num)
    w = rng.uniform(0.1, 0.5, num)
    h = w * rng.uniform(0.5, 2.0, num)
    boxes = np.stack([x1, y1, np.minimum(x1 + w, 0.999), np.minimum(y1 + h, 0.999)], axis=1)
    return boxes.astype(np.float32), np.ones(num, dtype=bool)


def detection_regions(
    boxes_by_frame: Mapping[int, np.ndarray], key_frame: int, params: CropParams, num: int
) -> tuple[np.ndarray, np.ndarray]:
    """Boxes of the annotated frame nearest to ``key_frame`` (source-frame index), best score
    first, mapped through the view's crop and flip; boxes mostly outside the crop are dropped.

    Args:
        boxes_by_frame: {frame_index: (N, 5) x1, y1, x2, y2, score}, from ``load_boxes``.
    """
    if not boxes_by_frame:
        return _pad(np.zeros((0, 4), np.float32), np.zeros(0, bool), num)
    nearest = min(boxes_by_frame, key=lambda k: (abs(k - key_frame), k))
    rows = boxes_by_frame[nearest]
    rows = rows[np.argsort(-rows[:, 4], kind="stable")]
    mapped, valid = transform_boxes(rows[:, :4], params)
    return _pad(mapped, valid, num)


def cue_regions(
    frame: np.ndarray,
    params: CropParams,
    num: int,
    rng: np.random.Generator,
    work_size: int = 96,
) -> tuple[np.ndarray, np.ndarray]:
    """``cue_proposals`` on the key frame (H, W, 3) uint8, mapped through the crop and flip;
    the best-ranked ``num`` that stay mostly inside the crop are kept."""
    proposals = cue_proposals(frame, rng, work_size=work_size)
    mapped, valid = transform_boxes(proposals, params)
    return _pad(mapped, valid, num)


def cue_proposals(
    frame: np.ndarray,
    rng: np.random.Generator,
    work_size: int = 96,
    min_area: float = 0.01,
    max_area: float = 0.8,
    max_iou: float = 0.7,
) -> np.ndarray:
    """Selective-search proposals on one frame.

    Args:
        frame: uint8 (H, W, 3).
        work_size: the frame is resized so its short side has this many pixels (speed).
        min_area: smallest kept box area, as a fraction of the frame.
        max_area: largest kept box area, as a fraction of the frame.
        max_iou: a proposal overlapping a better-ranked one by more than this is dropped.

    Returns:
        float32 (N, 4) boxes normalised to the frame, best first.
    """
    from skimage.segmentation import felzenszwalb
    from skimage.transform import resize

    h, w = frame.shape[:2]
    scale = work_size / min(h, w)
    small = resize(
        frame,
        (max(1, round(h * scale)), max(1, round(w * scale))),
        anti_aliasing=True,
        preserve_range=True,
    ).astype(np.uint8)
    labels = felzenszwalb(small, scale=50, sigma=0.8, min_size=20)
    boxes, levels = _hierarchy(small, labels)
    rank = levels * rng.random(len(levels))  # lower is better; level 1 = the last merge
    boxes = boxes[np.argsort(rank, kind="stable")]
    size = np.array([small.shape[1], small.shape[0], small.shape[1], small.shape[0]], float)
    boxes = boxes / size
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    boxes = boxes[(area >= min_area) & (area <= max_area)]
    return _suppress(boxes, max_iou).astype(np.float32)


def _initial_regions(image: np.ndarray, labels: np.ndarray) -> dict[int, dict]:
    """Per superpixel: pixel-edge box, size and L1-normalised colour histogram."""
    regions = {}
    n = int(labels.max()) + 1
    ys, xs = np.indices(labels.shape)
    flat = labels.ravel()
    bins = np.minimum(image.reshape(-1, 3).astype(np.int64) * _BINS // 256, _BINS - 1)
    hist = np.zeros((n, 3 * _BINS))
    for c in range(3):
        np.add.at(hist, (flat, c * _BINS + bins[:, c]), 1.0)
    sizes = np.bincount(flat, minlength=n)
    x1 = np.full(n, np.inf)
    y1 = np.full(n, np.inf)
    np.minimum.at(x1, flat, xs.ravel())
    np.minimum.at(y1, flat, ys.ravel())
    x2, y2 = np.zeros(n), np.zeros(n)
    np.maximum.at(x2, flat, xs.ravel() + 1)
    np.maximum.at(y2, flat, ys.ravel() + 1)
    for i in range(n):
        if sizes[i]:
            box = np.array([x1[i], y1[i], x2[i], y2[i]])
            regions[i] = {"box": box, "size": int(sizes[i]), "hist": hist[i] / (3 * sizes[i])}
    return regions


def _neighbours(labels: np.ndarray) -> set[tuple[int, int]]:
    pairs = set()
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1], labels[1:])):
        diff = a != b
        lo = np.minimum(a[diff], b[diff])
        hi = np.maximum(a[diff], b[diff])
        pairs.update(zip(lo.tolist(), hi.tolist(), strict=True))
    return pairs


def _similarity(r: dict, s: dict, image_size: int) -> float:
    colour = np.minimum(r["hist"], s["hist"]).sum()
    size = 1.0 - (r["size"] + s["size"]) / image_size
    box = np.concatenate(
        [np.minimum(r["box"][:2], s["box"][:2]), np.maximum(r["box"][2:], s["box"][2:])]
    )
    fill = 1.0 - ((box[2] - box[0]) * (box[3] - box[1]) - r["size"] - s["size"]) / image_size
    return float(colour + size + fill)


def _hierarchy(image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy merging; returns every region's box (N, 4) in pixels and its hierarchy level
    (1 for the final region, larger for regions merged earlier or never)."""
    regions = _initial_regions(image, labels)
    image_size = labels.size
    sims = {p: _similarity(regions[p[0]], regions[p[1]], image_size) for p in _neighbours(labels)}
    order = list(regions)  # creation order
    next_id = max(regions) + 1
    while sims:
        i, j = max(sims, key=sims.get)
        r, s = regions[i], regions[j]
        size = r["size"] + s["size"]
        regions[next_id] = {
            "box": np.concatenate(
                [np.minimum(r["box"][:2], s["box"][:2]), np.maximum(r["box"][2:], s["box"][2:])]
            ),
            "size": size,
            "hist": (r["hist"] * r["size"] + s["hist"] * s["size"]) / size,
        }
        touching = {k for k in sims if i in k or j in k}
        partners = {a if b in (i, j) else b for a, b in touching} - {i, j}
        for k in touching:
            del sims[k]
        for k in partners:
            sims[(k, next_id)] = _similarity(regions[k], regions[next_id], image_size)
        order.append(next_id)
        next_id += 1
    boxes = np.stack([regions[k]["box"] for k in order])
    levels = np.arange(len(order), 0, -1, dtype=float)
    return boxes, levels


def _suppress(boxes: np.ndarray, max_iou: float) -> np.ndarray:
    """Greedy non-maximum suppression by rank order."""
    keep: list[int] = []
    for i, b in enumerate(boxes):
        if not keep:
            keep.append(i)
            continue
        k = boxes[keep]
        iw = np.clip(np.minimum(k[:, 2], b[2]) - np.maximum(k[:, 0], b[0]), 0, None)
        ih = np.clip(np.minimum(k[:, 3], b[3]) - np.maximum(k[:, 1], b[1]), 0, None)
        inter = iw * ih
        union = (k[:, 2] - k[:, 0]) * (k[:, 3] - k[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        if np.all(inter <= max_iou * union):
            keep.append(i)
    return boxes[keep]
