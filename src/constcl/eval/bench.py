"""``constcl bench``: random init vs CVRL vs region vs ConST-CL on the synthetic world.

Pretrains three encoders (``cvrl``, ``region``, ``constcl``) with the same budget on CPU, adds the
random-init network, evaluates every encoder with all four tasks on both res5 branches (where the
encoder has two), and writes ``RESULTS.md`` (a table with budget, seeds, machine and date) and
``report.html`` (the table and every plot) into the output folder.
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger("constcl.bench")

VARIANTS = ("cvrl", "region", "constcl")
TASKS = ("classify", "detect", "track", "propagate")
# task -> (column title, key in results.json["metrics"])
HEADLINES = {
    "classify": [("linear top-1", "top1")],
    "detect": [("AVA-style mAP", "map")],
    "track": [("OTB precision@20 (res5)", "precision_20"), ("OTB success AUC (res5)",
                                                           "success_auc")],
    "propagate": [("DAVIS J&F (res5)", "J&F-Mean")],
}


@dataclass
class Budget:
    steps: int
    videos: int
    backbone: str
    frames: int
    size: int
    batch: int
    seed: int


def _cli(args: list[str]) -> None:
    from constcl.cli import main

    if main(args) != 0:
        raise RuntimeError(f"command failed: constcl {' '.join(args)}")


def pretrain_variant(variant: str, world: Path, out: Path, b: Budget) -> Path:
    """Pretrain one variant with the demo preset and the bench budget; returns the backbone."""
    from constcl.config import load_config
    from constcl.engine.presets import preset_path
    from constcl.engine.pretrain import pretrain

    cfg = load_config(preset_path("demo"), [
        f"data.source={world / 'videos'}", f"model.variant={variant}",
        f"model.backbone={b.backbone}", f"data.clip_frames={b.frames}", f"data.size={b.size}",
        f"train.steps={b.steps}", f"train.batch_size={b.batch}", f"train.seed={b.seed}",
        f"train.out_dir={out}", f"train.run_name={variant}", "train.time_limit_minutes=0",
        "train.progress=plain"])
    return pretrain(cfg) / "backbone.safetensors"


def task_args(task: str, world: Path, b: Budget) -> list[str]:
    """Per-task data folder and light settings (small clips, few views, few sequences)."""
    clip = ["--frames", str(b.frames), "--size", str(b.size)]
    if task == "classify":
        return ["--data", str(world), *clip, "--clips", "2", "--crops", "1", "--epochs", "60"]
    if task == "detect":
        return ["--data", str(world), *clip, "--epochs", "60"]
    # res5 (dilated to stride 8), so that the global and local res5 copies can differ; the
    # trackers' default res4 is shared by both branches
    if task == "track":
        return ["--data", str(world / "otb"), "--sequences", "12", "--stage", "res5"]
    return ["--data", str(world / "davis"), "--sequences", "6", "--stage", "res5"]


def evaluate(name: str, checkpoint: str, branch: str, world: Path, out: Path, b: Budget
             ) -> dict[str, dict]:
    results = {}
    for task in TASKS:
        folder = out / "eval" / f"{name}-{branch}" / task
        _cli(["eval", task, "--checkpoint", checkpoint, "--backbone", b.backbone,
              "--branch", branch, "--seed", str(b.seed), "--out", str(folder),
              *task_args(task, world, b)])
        results[task] = json.loads((folder / "results.json").read_text())
    return results


def headline_row(results: dict[str, dict]) -> list[str]:
    cells = []
    for task in TASKS:
        metrics = results[task].get("metrics", {})
        for _, key in HEADLINES[task]:
            value = metrics.get(key)
            cells.append("n/a" if value is None else f"{100 * value:.1f}")
    return cells


def write_results(out: Path, rows: list[tuple[str, str, list[str]]], b: Budget, minutes: float,
                  plots: list[Path]) -> None:
    titles = [t for task in TASKS for t, _ in HEADLINES[task]]
    import os

    machine = (f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} compute "
               f"thread(s) per process, torch {torch.__version__}")
    lines = [
        "# Results: random init vs CVRL vs region vs ConST-CL on the synthetic world", "",
        f"Date {time.strftime('%Y-%m-%d %H:%M')}; machine: CPU ({machine}); whole bench "
        f"{minutes:.1f} min (`constcl bench --steps {b.steps} --videos {b.videos}`).", "",
        f"Budget: {b.steps} steps x {b.batch} videos per variant, backbone {b.backbone}, clips "
        f"{b.frames} x {b.size}^2, seed {b.seed}, world of {b.videos} videos (128 x 128, 64 "
        f"frames). All numbers in %. One seed: differences of a few points are noise.", "",
        "| encoder | branch | " + " | ".join(titles) + " |",
        "|---|---|" + "---|" * len(titles),
    ]
    lines += [f"| {name} | {branch} | " + " | ".join(cells) + " |" for name, branch, cells in rows]
    (out / "RESULTS.md").write_text("\n".join(lines) + "\n")
    table = "".join(f"<tr><td>{html.escape(n)}</td><td>{br}</td>"
                    + "".join(f"<td>{c}</td>" for c in cells) + "</tr>" for n, br, cells in rows)
    head = "".join(f"<th>{html.escape(t)}</th>" for t in ["encoder", "branch", *titles])
    images = "".join(f"<figure><img src='{p.relative_to(out)}' width='420'><figcaption>"
                     f"{html.escape(str(p.relative_to(out)))}</figcaption></figure>" for p in plots)
    (out / "report.html").write_text(
        f"<html><head><meta charset='utf-8'><title>constcl bench</title></head><body>"
        f"<h1>constcl bench</h1><pre>{html.escape(chr(10).join(lines[:6]))}</pre>"
        f"<table border='1'><tr>{head}</tr>{table}</table><h2>Plots</h2>{images}</body></html>")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=Path("bench_out"), help="output folder")
    parser.add_argument("--steps", type=int, default=300, help="pretraining steps per variant")
    parser.add_argument("--videos", type=int, default=200, help="videos in the synthetic world")
    parser.add_argument("--backbone", default="r3d_small")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16, help="videos per pretraining step")
    parser.add_argument("--seed", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    from constcl.data.synth import generate_world

    began = time.time()
    # evaluations decode with 2 DataLoader workers; more compute threads than free cores makes
    # PyTorch's CPU kernels many times slower
    torch.set_num_threads(max(1, (torch.get_num_threads() or 2) // 2))
    b = Budget(args.steps, args.videos, args.backbone, args.frames, args.size, args.batch,
               args.seed)
    out = args.out.resolve()
    world = out / "world"
    generate_world(world, num_videos=b.videos, seed=0, size=128, tracks="val")
    rows = []

    def evaluate_all(name: str, checkpoint: str, branches: tuple[str, ...]) -> None:
        for branch in branches:
            results = evaluate(name.replace(" ", "_"), checkpoint, branch, world, out, b)
            rows.append((name, branch, headline_row(results)))
            log.info("%s / %s: %s", name, branch, rows[-1][2])

    evaluate_all("random init", "random", ("global",))  # first: fails early if an eval breaks
    for variant in VARIANTS:
        ckpt = pretrain_variant(variant, world, out / "runs", b)
        evaluate_all(variant, str(ckpt), ("global",) if variant == "cvrl" else ("global", "local"))
    plots = sorted((out / "eval").rglob("*.png"))
    write_results(out, rows, b, (time.time() - began) / 60, plots)
    print(f"wrote {out / 'RESULTS.md'} and {out / 'report.html'}")
    return 0
