"""How far is the region head's attention from sharp? The spread of the decoder's logits.

Usage:
    .venv/bin/python bench/attention_spread.py RUN [--videos N] [--steps 0,600]

RUN is a ``constcl pretrain`` folder of the ``constcl`` variant (its ``config.yaml``, and its
``checkpoints/step_*.pt`` for the steps asked for; step 0 is a fresh random init of the same
network). Two views of N videos of the run's own source are drawn exactly as training draws
them (``data.preview.sample_views``); every decoder layer's logits ``q k^T / sqrt(width)`` are
recorded in the forward pass and summarised per layer:

* ``logit_spread``: standard deviation of a query's logits over the N context tokens, averaged
  over queries, units and both directions. Attention is uniform when it is 0; a softmax over
  ~150 tokens leaves uniform noticeably only at a spread of about 0.5.
* ``key_spread``: norm of a key minus the mean key (per unit), the token-dependent part of k;
  ``query_norm``: norm of q per unit.
* ``attn_entropy``: the model's own statistic (entropy / log N, 1.0 = uniform).

docs/method.md, "Watching the mechanism during pretraining", has the numbers of the bench runs.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from constcl.config import load_config
from constcl.data.preview import sample_views
from constcl.data.sources import list_videos
from constcl.engine.checkpoint import load_checkpoint
from constcl.models import region_head
from constcl.network import model_from_config


def layer_stats(q: torch.Tensor, k: torch.Tensor, width: int) -> dict[str, float]:
    """q (B, U, K, W), k (B, U, N, W) of one decoder layer -> its spread statistics."""
    logits = q @ k.transpose(-2, -1) / math.sqrt(width)  # (B, U, K, N)
    return {"logit_spread": logits.std(dim=-1).mean().item(),
            "key_spread": (k - k.mean(dim=2, keepdim=True)).norm(dim=-1).mean().item(),
            "query_norm": q.norm(dim=-1).mean().item()}


def spreads(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> dict:
    """Per-layer :func:`layer_stats` (averaged over the a->b and b->a passes) and the
    forward's ``attn_entropy`` for one batch ``(view_a, view_b, boxes_a, boxes_b)``."""
    recorded: list[dict[str, float]] = []
    original = region_head.DecoderLayer.forward

    def forward(self, x, memory, entropies=None):
        q, k = self._split(self.q(x)), self._split(self.k(memory))
        recorded.append(layer_stats(q, k, self.width))
        return original(self, x, memory, entropies)

    region_head.DecoderLayer.forward = forward
    try:
        model.eval()
        with torch.no_grad():
            out = model(*inputs)
    finally:
        region_head.DecoderLayer.forward = original
    half = len(recorded) // 2
    layers = [{key: (recorded[i][key] + recorded[half + i][key]) / 2 for key in recorded[i]}
              for i in range(half)]
    return {"attn_entropy": out["attn_entropy"].item(), "layers": layers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--videos", type=int, default=8)
    parser.add_argument("--steps", default="0,600",
                        help="checkpoints to measure (0: a fresh random init)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = load_config(str(args.run / "config.yaml"), [])
    if cfg.model.variant != "constcl":
        parser.error(f"{args.run} is a {cfg.model.variant!r} run; the decoder is constcl's")
    items = list_videos(cfg.data.source)
    items = items[:: max(1, len(items) // args.videos)][: args.videos]
    views: dict[str, list[torch.Tensor]] = {"a": [], "b": [], "boxes_a": [], "boxes_b": []}
    for i, item in enumerate(items):
        sample, clips = sample_views(item.path, seed=i, size=cfg.data.size,
                                     frames=cfg.data.clip_frames, stride=cfg.data.frame_stride,
                                     num_regions=cfg.data.num_regions)
        for s in "ab":
            views[s].append(clips[s])
            views[f"boxes_{s}"].append(torch.as_tensor(sample[f"boxes_{s}"]).float())
    inputs = tuple(torch.stack(views[k]) for k in ("a", "b", "boxes_a", "boxes_b"))
    torch.manual_seed(cfg.train.seed)
    model = model_from_config(cfg)
    for step in (int(s) for s in args.steps.split(",")):
        if step:
            model.load_state_dict(load_checkpoint(args.run / "checkpoints"
                                                  / f"step_{step:08d}.pt")["model"])
        print(json.dumps({"step": step, **spreads(model, inputs)}))


if __name__ == "__main__":
    main()
