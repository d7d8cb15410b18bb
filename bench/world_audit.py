"""Audit of a synthetic world: which cues identify a video, and which carry its class.

Contrastive instance discrimination rewards whatever tells one video from the others in a batch.
If that is a cue with no class in it (a background of the video's own, saturated colours of
its own), pretraining learns the cue instead of the class. This script measures, under the
training augmentations (random resized crop, flip and the colour augmentations at
``--color-strength``), how well simple hand-made descriptors identify a video among a batch:

* ``colour``: mean and standard deviation of R, G, B and a 4 x 4 x 4 colour histogram;
* ``texture``: a grey-level gradient-orientation histogram (8 bins, magnitude-weighted) and a
  radial power spectrum (8 bands), i.e. the background's pattern, period and orientation;
* ``random net``: pooled res5 features of a random-init network (the floor every pretrained
  encoder should beat).

Identification: for each video's view a, the nearest view b (cosine, descriptors z-scored over
the batch) among ``--batch`` videos; chance is 1 / batch. Class: leave-one-out 1-NN class
accuracy of each descriptor over all videos (view a only); chance is 1 / classes.

    python bench/world_audit.py --world ~/.cache/constcl/synthetic/n200-s128 --size 112
    python bench/world_audit.py --videos 200 --seed 0 --out /tmp/audit   # generate first

``--local-sets DIR [DIR ...]`` audits tracking sets instead (each DIR holds ``otb/``: the world
for its v2 set, or a ``local_v3-*`` folder of ``constcl bench``): it tracks every OTB target
with low-level cues alone and prints their OPE precision@20 and success AUC, so the table says
which cue still solves which set (docs/synthetic_world.md, "Local sets v3"):

* ``pixels``: normalised cross-correlation of the first frame's RGB template, searched in a
  window of twice the box around the last position (the box keeps its first size);
* ``colour``: the box-sized window whose mean colour is closest to the first frame's target;
* ``stay``: the first frame's box in every frame (the prior of a tracker that never moves).

    python bench/world_audit.py --local-sets W/world-n500-s0 W/local_v3-n64-s0
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from constcl.data.augment import PhotometricAugment, to_model_range
from constcl.data.dataset import TwoViewDataset, collate
from constcl.data.sources import list_videos
from constcl.models import build_backbone


def colour_descriptor(x: torch.Tensor) -> torch.Tensor:
    """x (B, 3, T, H, W) in [0, 1] -> (B, 70): RGB mean, std and a 4x4x4 histogram."""
    flat = x.flatten(2)
    q = (flat.clamp(0, 0.999) * 4).long()
    bins = q[:, 0] * 16 + q[:, 1] * 4 + q[:, 2]
    hist = torch.stack([torch.bincount(b, minlength=64).float() for b in bins])
    return torch.cat([flat.mean(-1), flat.std(-1), hist / hist.sum(1, keepdim=True)], 1)


def texture_descriptor(x: torch.Tensor) -> torch.Tensor:
    """x (B, 3, T, H, W) in [0, 1] -> (B, 16): gradient-orientation histogram and radial
    power spectrum of the grey frames (contrast-normalised per clip)."""
    grey = (0.2989 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])  # (B, T, H, W)
    grey = (grey - grey.mean((1, 2, 3), keepdim=True)) / grey.std((1, 2, 3), keepdim=True).add(1e-6)
    gx = grey[..., :, 1:] - grey[..., :, :-1]
    gy = grey[..., 1:, :] - grey[..., :-1, :]
    gx, gy = gx[..., :-1, :], gy[..., :, :-1]
    mag, ang = torch.hypot(gx, gy), torch.remainder(torch.atan2(gy, gx), np.pi)
    idx = (ang / np.pi * 8).long().clamp(max=7).flatten(1)
    orient = torch.zeros(x.shape[0], 8).scatter_add_(1, idx, mag.flatten(1))
    spec = torch.fft.fft2(grey).abs().pow(2).mean(1)  # (B, H, W)
    h, w = spec.shape[-2:]
    fy, fx = torch.meshgrid(torch.fft.fftfreq(h), torch.fft.fftfreq(w), indexing="ij")
    band = (torch.hypot(fy, fx) / 0.5 * 8).long().clamp(max=7).flatten()
    radial = torch.zeros(x.shape[0], 8).index_add_(1, band, spec.flatten(1))
    return torch.cat([orient / orient.sum(1, keepdim=True),
                      torch.log(radial / radial.sum(1, keepdim=True))], 1)


@torch.no_grad()
def net_descriptor(net, x: torch.Tensor) -> torch.Tensor:
    return net(to_model_range(x, max_value=1.0))  # pooled res5


def _ncc_map(search: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
    """Normalised cross-correlation of a (3, th, tw) template over a (3, H, W) window:
    (H - th + 1, W - tw + 1), in [-1, 1] (0 where the window is flat)."""
    t = template - template.mean()
    t = t / t.norm().clamp_min(1e-6)
    ones = torch.ones_like(template)[None]
    num = F.conv2d(search[None], t[None])[0, 0]
    n = template.numel()
    mean = F.conv2d(search[None], ones)[0, 0] / n
    sq = F.conv2d(search[None] ** 2, ones)[0, 0]
    std = (sq - n * mean ** 2).clamp_min(0).sqrt()
    return num / std.clamp_min(1e-3)


def _colour_map(search: torch.Tensor, colour: torch.Tensor, th: int, tw: int) -> torch.Tensor:
    """Minus the distance between each (th, tw) window's mean colour and ``colour`` (3,)."""
    means = F.avg_pool2d(search[None], (th, tw), stride=1)[0]
    return -(means - colour[:, None, None]).norm(dim=0)


def track_low_level(frames: list[Path], box0: np.ndarray, cue: str) -> np.ndarray:
    """(T, 4) x, y, w, h boxes of one low-level tracker (``pixels``, ``colour`` or ``stay``)."""
    from PIL import Image

    boxes = np.repeat(box0[None].astype(np.float64), len(frames), axis=0)
    if cue == "stay":
        return boxes
    images = [torch.from_numpy(np.asarray(Image.open(f).convert("RGB"), dtype=np.float32)
                               ).permute(2, 0, 1) / 255 for f in frames]
    _, height, width = images[0].shape
    x, y = box0[0] - 1, box0[1] - 1
    tw, th = max(int(round(box0[2])), 2), max(int(round(box0[3])), 2)
    x0, y0 = int(round(x)), int(round(y))
    template = images[0][:, y0:y0 + th, x0:x0 + tw]
    colour = template.mean(dim=(1, 2))
    for t in range(1, len(frames)):
        sx0, sy0 = max(0, int(x - tw / 2)), max(0, int(y - th / 2))
        sx1, sy1 = min(width, int(x + 1.5 * tw) + 1), min(height, int(y + 1.5 * th) + 1)
        window = images[t][:, sy0:sy1, sx0:sx1]
        if window.shape[1] < th or window.shape[2] < tw:
            boxes[t] = (x + 1, y + 1, tw, th)
            continue
        score = _ncc_map(window, template) if cue == "pixels" else \
            _colour_map(window, colour, th, tw)
        dy, dx = divmod(int(score.argmax()), score.shape[1])
        x, y = sx0 + dx, sy0 + dy
        boxes[t] = (x + 1, y + 1, tw, th)
    return boxes


def audit_tracking(roots: list[Path]) -> dict:
    """Low-level trackers on the OTB set of every root: {root: {cue: (precision@20, AUC)}}."""
    from constcl.eval.metrics.tracking import evaluate_ope
    from constcl.eval.track.data import load_sequences

    out = {}
    for root in roots:
        seqs = load_sequences(Path(root) / "otb")
        gt = {s.name: s.boxes for s in seqs}
        row = {}
        for cue in ("pixels", "colour", "stay"):
            pred = {s.name: track_low_level(s.frames, s.boxes[0], cue) for s in seqs}
            _, avg = evaluate_ope(pred, gt)
            row[cue] = {"precision_20": avg.precision_score, "success_auc": avg.success_score}
        out[str(root)] = {"sequences": len(seqs), "cues": row}
    return out


def zscore(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    both = torch.cat([a, b])
    mu, sd = both.mean(0), both.std(0).add(1e-6)
    return F.normalize((a - mu) / sd, dim=1), F.normalize((b - mu) / sd, dim=1)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=Path, help="a world folder (with videos/); else generate")
    p.add_argument("--videos", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="world seed when generating")
    p.add_argument("--out", type=Path, default=Path("bench_out/audit"))
    p.add_argument("--size", type=int, default=112, help="crop side (training setting)")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--color-strength", type=float, nargs="+", default=[0.0, 0.3, 1.0])
    p.add_argument("--batch", type=int, default=16, help="videos among which to identify")
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--backbone", default="r3d_small")
    p.add_argument("--json", type=Path, help="also write the results here")
    p.add_argument("--local-sets", type=Path, nargs="+",
                   help="audit these tracking sets (folders with otb/) instead")
    args = p.parse_args(argv)
    if args.local_sets:
        began = time.time()
        results = audit_tracking(args.local_sets)
        lines = ["| set | OTB targets | cue | precision@20 % | success AUC % |",
                 "|---|---|---|---|---|"]
        for root, r in results.items():
            for cue, v in r["cues"].items():
                lines.append(f"| {root} | {r['sequences']} | {cue} | "
                             f"{100 * v['precision_20']:.1f} | {100 * v['success_auc']:.1f} |")
        print("\n".join(lines) + f"\n({time.time() - began:.0f} s)")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        return results
    torch.manual_seed(0)
    world = args.world
    if world is None:
        from constcl.data.synth import generate_world

        world = args.out / "world"
        generate_world(world, num_videos=args.videos, seed=args.seed)
    items = list_videos(Path(world) / "videos")
    labels = np.array([it.label for it in items])
    data = TwoViewDataset(items, clip_frames=args.frames, size=args.size, num_regions=1, seed=0)
    net = build_backbone(args.backbone).eval()
    began = time.time()
    rng = np.random.default_rng(0)
    rounds = [rng.choice(len(items), args.batch, replace=False) for _ in range(args.rounds)]
    raw = {int(i): data[int(i)] for r in rounds for i in r}
    for i in range(len(items)):  # the class test needs every video
        if i not in raw:
            raw[i] = data[i]
    results: dict = {"world": str(world), "videos": len(items), "classes": int(labels.max() + 1),
                     "size": args.size, "frames": args.frames, "batch": args.batch,
                     "rounds": args.rounds, "strengths": {}}
    for strength in args.color_strength:
        g = torch.Generator().manual_seed(1)
        aug = [PhotometricAugment.for_view(v, g, strength, args.size) for v in "ab"]
        views = {}
        order = sorted(raw)
        for start in range(0, len(order), 32):
            chunk = order[start:start + 32]
            batch = collate([raw[i] for i in chunk])
            a = (aug[0](batch["view_a"]) + 1) / 2
            b = (aug[1](batch["view_b"]) + 1) / 2
            for name, fn in (("colour", colour_descriptor), ("texture", texture_descriptor),
                             ("random net", lambda x: net_descriptor(net, x))):
                fa, fb = fn(a), fn(b)
                for j, i in enumerate(chunk):
                    views.setdefault(name, {})[i] = (fa[j], fb[j])
        row = {}
        for name, table in views.items():
            hits = []
            for r in rounds:
                fa = torch.stack([table[int(i)][0] for i in r])
                fb = torch.stack([table[int(i)][1] for i in r])
                za, zb = zscore(fa, fb)
                hits.append((za @ zb.T).argmax(1).eq(torch.arange(len(r))).float().mean().item())
            feats = torch.stack([table[i][0] for i in order])
            za, _ = zscore(feats, feats)
            sim = za @ za.T
            sim.fill_diagonal_(-2)
            nn_label = labels[sim.argmax(1).numpy()]
            row[name] = {"identification": float(np.mean(hits)),
                         "identification_std": float(np.std(hits)),
                         "class_1nn": float((nn_label == labels[order]).mean())}
        results["strengths"][str(strength)] = row
    results["seconds"] = round(time.time() - began, 1)
    lines = [f"world {world} ({len(items)} videos, {results['classes']} classes), crops "
             f"{args.frames} x {args.size}^2, identification among {args.batch} (chance "
             f"{100 / args.batch:.1f}%), class 1-NN (chance {100 / results['classes']:.1f}%)",
             "", "| colour strength | descriptor | identification % | class 1-NN % |",
             "|---|---|---|---|"]
    for strength, row in results["strengths"].items():
        for name, r in row.items():
            lines.append(f"| {strength} | {name} | {100 * r['identification']:.1f} "
                         f"+- {100 * r['identification_std']:.1f} | {100 * r['class_1nn']:.1f} |")
    print("\n".join(lines))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
