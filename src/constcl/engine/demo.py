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
import time
from pathlib import Path

from constcl.config import ConfigError, load_config
from constcl.engine.presets import preset_path

log = logging.getLogger("constcl.demo")


def _probe(checkpoint: str, world: Path, out: Path, cfg) -> dict:
    """Linear probe of one backbone on the synthetic world; returns its results.json."""
    from constcl.cli import main as cli_main

    args = ["eval", "classify", "--checkpoint", checkpoint, "--backbone", cfg.model.backbone,
            "--branch", "global", "--data", str(world), "--out", str(out),
            "--frames", str(cfg.data.clip_frames), "--size", str(cfg.data.size),
            "--clips", "2", "--crops", "1", "--epochs", "60", "--workers",
            str(cfg.data.workers)]
    if cli_main(args) != 0:
        raise RuntimeError(f"linear probe failed: constcl {' '.join(args)}")
    return json.loads((out / "results.json").read_text())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="overrides of the demo preset, e.g. train.steps=50")
    parser.add_argument("--no-probe", action="store_true", help="pretrain only")


def run(args: argparse.Namespace) -> int:
    from constcl.engine.pretrain import pretrain

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
        from constcl.eval.backbone import BRANCHES  # noqa: F401  (fails early if eval is broken)

        world = Path(cfg.data.synth_dir).expanduser() / f"n{cfg.data.synth_videos}-s" \
            f"{cfg.data.synth_size}"
        trained = _probe(str(run_dir / "backbone.safetensors"), world, run_dir / "probe", cfg)
        random = _probe("random", world, run_dir / "probe_random_init", cfg)
        lines.append(f"linear probe top-1 on the synthetic world ({trained['num_classes']} "
                     f"classes): pretrained {100 * trained['metrics']['top1']:.1f}% vs random "
                     f"init {100 * random['metrics']['top1']:.1f}%")
    lines += [f"run folder: {run_dir}",
              f"  metrics: {run_dir / 'metrics.jsonl'} (TensorBoard: {run_dir / 'tensorboard'})",
              f"  backbone: {run_dir / 'backbone.safetensors'}"]
    print("\n".join(lines))
    return 0
