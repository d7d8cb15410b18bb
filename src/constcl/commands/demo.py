"""``constcl demo``: the install check behind ``make demo``.

1. Pretrain ConST-CL with the ``demo`` preset on the synthetic world (generated on first use).
2. Linear probe on the world's UCF101-style split, the pretrained backbone against the same
   network with random weights, both with identical probe settings.
3. Print where everything went.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

from constcl.config import Config, ConfigError, load_config
from constcl.engine.data import synthetic_world_dir
from constcl.engine.presets import preset_path
from constcl.engine.pretrain import pretrain
from constcl.eval import classify

log = logging.getLogger("constcl.demo")


def _probe(checkpoint: str, world: Path, out: Path, cfg: Config) -> dict:
    """Linear probe of one backbone on the synthetic world; returns its results.json. The
    random-init network gets the run's input normalisation, so it differs only in weights."""
    return classify.run(classify.Settings(
        checkpoint=checkpoint, backbone=cfg.model.backbone, branch="global", data=world,
        input_norm=cfg.model.input_norm if checkpoint == "random" else None,
        out=out, frames=cfg.data.clip_frames, size=cfg.data.size, clips=2, crops=1, epochs=60,
        workers=cfg.data.workers))


def verdict(pretrained: float, random_init: float, test_videos: int | None) -> str:
    """One line saying whether the difference of two top-1 accuracies on ``test_videos`` test
    videos is more than noise: more than two standard errors of the difference of two
    independent proportions, ``sqrt((p1 (1 - p1) + p2 (1 - p2)) / n)`` (floored at one test
    video, ``1 / n``)."""
    if not test_videos:
        return "no test video could be evaluated; no comparison"
    se = max(math.sqrt((pretrained * (1 - pretrained) + random_init * (1 - random_init))
                       / test_videos), 1.0 / test_videos)
    diff = pretrained - random_init
    spread = (f"{100 * diff:+.1f} points, noise +-{200 * se:.1f} (2 standard errors over "
              f"{test_videos} test videos)")
    if diff > 2 * se:
        return f"pretraining beats random init on this budget: {spread}"
    if -diff > 2 * se:
        return (f"random init beats this short pretraining run: {spread}; at a few hundred CPU "
                "steps the paper recipe has not yet learned the class (docs/method.md, 'What a "
                "short CPU run can and cannot show'); run longer with train.steps=...")
    return (f"pretrained and random init do not differ beyond noise: {spread}; one short run "
            "on this world cannot tell them apart (docs/method.md, 'What a short CPU run can "
            "and cannot show')")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="overrides of the demo preset, e.g. train.steps=50")
    parser.add_argument("--no-probe", action="store_true", help="pretrain only")


def run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(preset_path("demo"), list(args.overrides))
    except ConfigError as err:
        log.error("invalid config: %s", err)
        return 2
    began = time.time()
    run_dir = pretrain(cfg)
    minutes = (time.time() - began) / 60
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    tenth = max(len(losses) // 10, 1)
    first, last = sum(losses[:tenth]) / tenth, sum(losses[-tenth:]) / tenth
    lines = [f"pretraining: {records[-1]['step']} steps in {minutes:.1f} min; mean loss of the "
             f"first / last 10% of logged intervals: {first:.3f} -> {last:.3f}"]
    if not args.no_probe:
        world = synthetic_world_dir(cfg.data)
        trained = _probe(str(run_dir / "backbone.safetensors"), world, run_dir / "probe", cfg)
        random = _probe("random", world, run_dir / "probe_random_init", cfg)
        ours, base = trained["metrics"]["top1"], random["metrics"]["top1"]
        lines.append(f"linear probe top-1 on the synthetic world ({trained['num_classes']} "
                     f"classes): pretrained {100 * ours:.1f}% vs random init {100 * base:.1f}%")
        lines.append(verdict(ours, base, trained.get("videos_evaluated", {}).get("test")))
    lines += [f"run folder: {run_dir}",
              f"  metrics: {run_dir / 'metrics.jsonl'} (TensorBoard: {run_dir / 'tensorboard'})",
              f"  backbone: {run_dir / 'backbone.safetensors'}"]
    print("\n".join(lines))
    return 0
