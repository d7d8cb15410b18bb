"""``constcl extract SOURCE --checkpoint CK --out DIR``: features of every video of a source.

The work is :func:`constcl.features.extract.extract` (snippet positions, file layout, resuming,
bad videos, torchrun). Exit code 0 when the run finished, bad videos included (listed in
``OUT/report.json``) unless ``--strict``; 2 for unusable input, as one ``constcl: error:`` line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl.data.decode import DECODERS
from constcl.features.extract import PRECISIONS, ExtractSettings, extract
from constcl.features.plan import STRIDE_UNITS
from constcl.models.r3d import INPUT_NORMS

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``constcl extract`` (the fields of ``ExtractSettings``)."""
    parser.add_argument("source", help="folder of videos (sub-folders mirrored in OUT), .csv, "
                        ".txt list or a prepared manifest.csv")
    parser.add_argument("--checkpoint", required=True,
                        help="backbone.safetensors (from `constcl pretrain` or `constcl convert "
                             "tf`), or 'random' (then --backbone is required)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder (a rerun into it resumes)")
    parser.add_argument("--backbone", default=None,
                        help="backbone name; read from the checkpoint when omitted")
    parser.add_argument("--input-norm", choices=INPUT_NORMS, default=None,
                        help="input normalisation of a random-init network (default none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of random-init weights")
    parser.add_argument("--branch", choices=("global", "local", "both"), default="global",
                        help="res5 copy: global, local (the region branch's) or both (one file "
                             "each)")
    parser.add_argument("--clip-frames", type=int, default=16, help="frames per snippet")
    parser.add_argument("--frame-stride", type=int, default=2,
                        help="frames between a snippet's frames (nominal frame grid)")
    parser.add_argument("--size", type=int, default=224,
                        help="short side the frames are resized to, then the centre square")
    parser.add_argument("--stride", type=float, default=1.0,
                        help="a snippet every STRIDE seconds (or frames with --stride-unit)")
    parser.add_argument("--stride-unit", choices=STRIDE_UNITS, default="seconds",
                        help="unit of --stride")
    parser.add_argument("--dense", action="store_true",
                        help="also write the res5 maps (float16, <name>.res5.npy)")
    parser.add_argument("--boxes", type=Path, default=None,
                        help="AVA-style CSV (video_id, timestamp, x1, y1, x2, y2 normalised): "
                             "RoI features per row in <name>.boxes.npy")
    parser.add_argument("--root", type=Path, default=None,
                        help="folder that CSV / list entries are relative to")
    parser.add_argument("--batch-size", type=int, default=8, help="snippets per forward pass")
    parser.add_argument("--workers", type=int, default=2,
                        help="DataLoader processes that decode videos (0: in-process)")
    parser.add_argument("--device", default="auto",
                        help="'auto' (cuda when available), 'cpu', 'cuda:1', ...")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32",
                        help="bf16: autocast the network (features stored as float32)")
    parser.add_argument("--decoder", choices=DECODERS, default="pyav", help="video decoder")
    parser.add_argument("--strict", action="store_true",
                        help="exit 2 when any video is bad (default: skip and list them)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    result = extract(ExtractSettings(
        source=args.source, checkpoint=args.checkpoint, out=args.out, backbone=args.backbone,
        input_norm=args.input_norm, seed=args.seed, branch=args.branch,
        clip_frames=args.clip_frames, frame_stride=args.frame_stride, size=args.size,
        stride=args.stride, stride_unit=args.stride_unit, dense=args.dense, boxes=args.boxes,
        root=args.root, batch_size=args.batch_size, workers=args.workers, device=args.device,
        precision=args.precision, decoder=args.decoder, strict=args.strict,
        progress=not args.no_progress))
    print(f"{result.total - len(result.bad)} of {result.total} videos extracted "
          f"({result.written} now, {result.reused} before), {len(result.bad)} bad"
          + (f" (see {args.out}/report.json)" if result.bad else "") + f"; index: {result.index}")
    return 0
