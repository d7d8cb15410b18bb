"""``constcl extract`` throughput: snippets per second, against the network's forward alone.

Usage:
    python bench/extract_throughput.py [--cases r3d_small r3d50] [--workers 1] [--videos N]

For each case (backbone, snippet frames x size; :data:`CASES`) this writes a few videos of a
few seconds (320 x 240, 25 fps, libx264 with a key frame every second, a panning texture), runs
:func:`constcl.features.extract` on them with random weights (the cost does not depend on the
weights) and a snippet every second, and then times the same network's forward pass on random
uint8 input of the same shape and batch size in the same process (median batch time). The
ratio extract / forward says what limits extraction: near 1 the network, well below 1 decoding
(or the hand-off).
Prints a Markdown table row per case and the load average before and after (other jobs on the
machine change both numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from constcl.data.encode import write_video
from constcl.features.encoder import load_encoder
from constcl.features.extract import ExtractSettings, extract

# backbone -> (snippet frames, size, videos, seconds per video): ~1 minute each on 2 cores
CASES = {"r3d_small": (8, 112, 4, 15.0), "r3d50": (16, 224, 2, 5.0)}


def panning_video(path: Path, seconds: float, seed: int) -> Path:
    """A 320 x 240, 25 fps video of a texture panning right, one key frame per second."""
    rng = np.random.default_rng(seed)
    tile = rng.integers(0, 256, (31, 81, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(tile, 8, axis=0), 8, axis=1)[:240]
    frames = np.stack([texture[:, 2 * i % 320:2 * i % 320 + 320]
                       for i in range(int(seconds * 25))])
    return write_video(path, frames, fps=25, gop_size=25,
                       options={"crf": "23", "preset": "veryfast", "threads": "1"})


def time_forward(backbone: str, frames: int, size: int, batch: int, batches: int) -> float:
    """Snippets per second of ``embed`` on random uint8 (batch, frames, size, size, 3): the
    median over ``batches`` timed batches after one warm-up batch."""
    encoder = load_encoder("random", backbone=backbone)
    clips = torch.randint(0, 256, (batch, frames, size, size, 3), dtype=torch.uint8)
    times = []
    with torch.inference_mode():
        encoder.embed(clips)  # warm-up
        for _ in range(batches):
            start = time.perf_counter()
            encoder.embed(clips)
            times.append(time.perf_counter() - start)
    return batch / float(np.median(times))


def run_case(backbone: str, args: argparse.Namespace, work: Path) -> dict[str, float]:
    frames, size, count, seconds = CASES[backbone]
    count, seconds = args.videos or count, args.seconds or seconds
    videos = work / f"videos-{backbone}"
    videos.mkdir()
    for k in range(count):
        panning_video(videos / f"v{k}.mp4", seconds, k)
    settings = ExtractSettings(source=videos, checkpoint="random", backbone=backbone,
                               out=work / f"out-{backbone}", clip_frames=frames, frame_stride=2,
                               size=size, stride=1.0, batch_size=args.batch_size,
                               workers=args.workers, device="cpu", progress=False)
    start = time.perf_counter()
    extract(settings)
    elapsed = time.perf_counter() - start
    rows = (settings.out / "index.jsonl").read_text().splitlines()
    snippets = sum(int(json.loads(r)["snippets"]) for r in rows)
    forward = time_forward(backbone, frames, size, min(args.batch_size, snippets),
                           max(3, snippets // args.batch_size))
    return {"snippets": snippets, "seconds": elapsed, "extract": snippets / elapsed,
            "forward": forward, "frames": frames, "size": size, "videos": count,
            "length": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=None, help="videos per case (default: "
                        "the case's, see CASES)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each video")
    parser.add_argument("--workers", type=int, default=1, help="decoding worker processes")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), load average before "
          f"{os.getloadavg()[0]:.2f}")
    print("| network | snippet | videos x s | snippets | extract snippets/s | forward alone "
          "snippets/s | ratio |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="extract-bench-") as tmp:
        for backbone in args.cases:
            r = run_case(backbone, args, Path(tmp))
            print(f"| {backbone} | {r['frames']} x {r['size']}^2 | {r['videos']} x "
                  f"{r['length']:g} s | "
                  f"{r['snippets']} | {r['extract']:.2f} | {r['forward']:.2f} | "
                  f"{r['extract'] / r['forward']:.2f} |", flush=True)
    print(f"# load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
