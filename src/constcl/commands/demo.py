"""``constcl demo``: the install check behind ``make demo``.

1. Pretrain ConST-CL with the ``demo`` preset on the synthetic world (generated on first use).
2. Linear probe on the world's UCF101-style split, the pretrained backbone against the same
   network with random weights, both with identical probe settings.
3. Print where everything went.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import logging
import math
import time
from pathlib import Path

from constcl.benchmark import Budget, task_settings
from constcl.config import Config, ConfigError, load_config
from constcl.engine.data import synthetic_world_dir
from constcl.engine.presets import preset_path
from constcl.engine.pretrain import pretrain
from constcl.eval import classify

log = logging.getLogger("constcl.demo")


def _probe(checkpoint: str, world: Path, out: Path, cfg: Config) -> dict:
    """Linear probe of one backbone on the synthetic world; returns its results.json. The probe
    is ``constcl bench``'s (same epochs, weight decay, views), and the random-init network gets
    the run's input normalisation and seed, so the two probes differ only in the weights."""
    budget = Budget(backbone=cfg.model.backbone, frames=cfg.data.clip_frames, size=cfg.data.size)
    encoder = {"checkpoint": checkpoint, "backbone": cfg.model.backbone, "branch": "global",
               "seed": cfg.train.seed,
               "input_norm": cfg.model.input_norm if checkpoint == "random" else None}
    settings = task_settings("classify", encoder, world, budget, out)
    return classify.run(dataclasses.replace(settings, workers=cfg.data.workers))


def correct_per_video(predictions_csv: Path) -> dict[str, bool]:
    """``{video: prediction == label}`` from a probe's ``predictions.csv``."""
    with predictions_csv.open(newline="") as f:
        return {row["video"]: row["prediction"] == row["label"] for row in csv.DictReader(f)}


def verdict(pretrained: dict[str, bool], random_init: dict[str, bool]) -> str:
    """One line saying whether pretrained beats random init beyond noise on the test videos
    both probes evaluated (``{video: correct}`` each).

    The two probes see the same videos, so the difference of accuracies is tested paired: with
    ``n`` videos, ``b`` right only for pretrained and ``c`` right only for random init, the
    difference is ``(b - c) / n`` with standard error ``sqrt(b + c - (b - c)^2 / n) / n``
    (floored at one video, ``1 / n``); "beats" means more than two standard errors.
    """
    videos = sorted(set(pretrained) & set(random_init))
    n = len(videos)
    if not n:
        return "no test video could be evaluated; no comparison"
    b = sum(pretrained[v] and not random_init[v] for v in videos)
    c = sum(random_init[v] and not pretrained[v] for v in videos)
    diff = (b - c) / n
    se = max(math.sqrt(max(b + c - (b - c) ** 2 / n, 0.0)) / n, 1.0 / n)
    spread = (f"{100 * diff:+.1f} points, noise +-{200 * se:.1f} (2 standard errors, paired over "
              f"{n} test videos: {b} right only pretrained, {c} right only random init)")
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
        lines.append(verdict(correct_per_video(run_dir / "probe" / "predictions.csv"),
                             correct_per_video(run_dir / "probe_random_init" / "predictions.csv")))
    lines += [f"run folder: {run_dir}",
              f"  metrics: {run_dir / 'metrics.jsonl'} (TensorBoard: {run_dir / 'tensorboard'})",
              f"  backbone: {run_dir / 'backbone.safetensors'}"]
    print("\n".join(lines))
    return 0
