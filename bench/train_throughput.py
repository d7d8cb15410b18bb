"""Throughput of a full ConST-CL training step (model forward + backward + optimiser step).

Uses the library's own pieces (``build_model``, ``build_optimizer``, ``TrainStep``, and the batched
photometric augmentation on the device), on random clips so that data loading is not measured.

    python bench/train_throughput.py                                   # R3D-50, 2 x 16 clips
    python bench/train_throughput.py --precision bf16 --channels-last --compile   # GPU best
    python bench/train_throughput.py --model r3d_tiny --frames 8 --size 64 --batch 8  # CPU

Prints one JSON line: clips/s (both views count), TFLOP/s (from ``constcl info``'s FLOP count of
the same step), peak GPU memory, the host reads per step (``engine.monitor.HostReadCounter``
over a few extra steps after the timed ones: on a GPU each is a wait for the device), and the
settings. ``--json PATH`` also writes it to a file. ``bench/gpu_check.py`` runs this script.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from constcl.data.augment import PhotometricAugment
from constcl.engine.monitor import HostReadCounter
from constcl.engine.optim import build_optimizer
from constcl.engine.step import TrainStep
from constcl.models import build_model
from constcl.models.info import count_flops


def make_batch(batch: int, frames: int, size: int, k: int, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(0)
    views = [torch.randint(0, 256, (batch, 3, frames, size, size), dtype=torch.uint8,
                           generator=gen) for _ in range(2)]
    xy = torch.rand(2, batch, k, 2, generator=gen) * 0.5
    boxes = torch.cat([xy, xy + 0.1 + 0.4 * torch.rand(2, batch, k, 2, generator=gen)], -1)
    return {"view_a": views[0].to(device), "view_b": views[1].to(device),
            "boxes_a": boxes[0].to(device), "boxes_b": boxes[1].to(device),
            "mask_a": torch.ones(batch, k, dtype=torch.bool, device=device),
            "mask_b": torch.ones(batch, k, dtype=torch.bool, device=device)}


def per_step(counter: HostReadCounter, steps: int) -> dict[str, float] | None:
    return {k: v / steps for k, v in sorted(counter.counts.items())} if steps else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="r3d50")
    p.add_argument("--variant", default="constcl")
    p.add_argument("--batch", type=int, default=16, help="videos per view (2 x batch clips)")
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--context-length", type=int, default=5)
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp32"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend (eager: dynamo only, the CPU smoke test)")
    p.add_argument("--regions", type=int, default=8, help="K boxes per clip")
    p.add_argument("--count-steps", type=int, default=3,
                   help="steps after the timed ones whose host reads are counted (0: none)")
    p.add_argument("--json", default="", help="also write the JSON line to this file")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.backends.cudnn.benchmark = True

    flops = count_flops(build_model(args.model, variant=args.variant,
                                    context_length=args.context_length),
                        args.frames, args.size)["train_step_gflop_per_clip"]
    model = build_model(args.model, variant=args.variant,
                        context_length=args.context_length).to(device)
    started = time.perf_counter()
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    opt = build_optimizer(model, "sgd", 0.1, 0.9, 1e-6)
    runner = torch.compile(model, backend=args.compile_backend) if args.compile else model
    step = TrainStep(runner, opt, args.precision, device.type)
    aug_a, aug_b = PhotometricAugment.for_view("a"), PhotometricAugment.for_view("b")
    raw = make_batch(args.batch, args.frames, args.size, args.regions, device)

    counter, augment_counter = HostReadCounter(), HostReadCounter()

    def one_step() -> None:
        batch = dict(raw)
        with counter.paused(), augment_counter:
            for key, aug in (("view_a", aug_a), ("view_b", aug_b)):
                view = aug(raw[key])
                batch[key] = view.contiguous(memory_format=torch.channels_last_3d) \
                    if args.channels_last else view
        step([batch], lr=0.1)

    for _ in range(args.warmup):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    warmup_s = time.perf_counter() - started
    start = time.perf_counter()
    for _ in range(args.steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    clips = 2 * args.batch / seconds
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    augment_counter.counts.clear()
    with counter:  # the step's waits; the augmentation's are counted apart
        for _ in range(args.count_steps):
            one_step()
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda"
        else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} "
             f"threads)",
        "model": args.model, "variant": args.variant, "clips_per_step": 2 * args.batch,
        "clip": [args.frames, args.size, args.size], "regions": args.regions,
        "context_length": args.context_length, "precision": args.precision,
        "channels_last": args.channels_last,
        "compile": args.compile_backend if args.compile else False,
        "warmup_s": round(warmup_s, 1),
        "seconds_per_step": round(seconds, 4), "clips_per_s": round(clips, 2),
        "gflop_per_clip": round(flops, 2), "tflop_per_s": round(clips * flops / 1e3, 3),
        "peak_memory_gib": round(peak, 2) if peak is not None else None,
        "host_reads_per_step": per_step(counter, args.count_steps),
        "augment_host_reads_per_step": per_step(augment_counter, args.count_steps),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    print(json.dumps(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
