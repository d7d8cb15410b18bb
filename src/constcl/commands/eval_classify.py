"""``constcl eval classify``: flags -> :class:`constcl.eval.classify.Settings` -> ``run``."""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl.commands.eval_args import add_encoder_arguments, settings_from_args
from constcl.eval import classify
from constcl.eval.classify.data import LAYOUTS
from constcl.eval.classify.task import MODES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags; each is the :class:`constcl.eval.classify.Settings` field of that name."""
    add_encoder_arguments(parser)
    parser.add_argument("--data", required=True, type=Path,
                        help="data-set root or split folder: ucfTrainTestlist/, "
                             "testTrainMulti_7030_splits/ or kinetics/{train,validate}.csv")
    parser.add_argument("--layout", choices=LAYOUTS, default="auto",
                        help="split-file layout (auto: UCF101, then HMDB51, then Kinetics)")
    parser.add_argument("--split", type=int, default=1, choices=(1, 2, 3),
                        help="official UCF101 / HMDB51 split")
    parser.add_argument("--videos", type=Path, default=None,
                        help="folder of the video files (default DATA/videos, DATA/UCF-101, ..)")
    parser.add_argument("--mode", choices=MODES, default="linear",
                        help="linear probe on frozen features, full fine-tuning, or kNN retrieval")
    views = parser.add_argument_group("views")
    views.add_argument("--frames", type=int, default=32, help="frames per clip")
    views.add_argument("--stride", type=int, default=2, help="temporal stride between frames")
    views.add_argument("--size", type=int, default=256,
                       help="short side after resizing = side of the square crops")
    views.add_argument("--clips", type=int, default=10, help="temporal test views per video")
    views.add_argument("--crops", type=int, default=3, choices=(1, 3),
                       help="spatial test views per clip (3: both ends and centre)")
    views.add_argument("--train-clips", type=int, default=None,
                       help="temporal views per training video for the linear probe "
                            "(default: --clips); each view is one training sample. The cache "
                            "holds videos x views x C floats: for Kinetics-400 with R3D-50 use "
                            "1-2")
    views.add_argument("--train-crops", type=int, default=1, choices=(1, 3),
                       help="spatial views per training clip for the linear probe")
    train = parser.add_argument_group("classifier")
    train.add_argument("--epochs", type=int, default=100,
                       help="probe / fine-tuning epochs (fine-tuning: try 10-50)")
    train.add_argument("--lr", type=float, default=0.1,
                       help="peak SGD learning rate (probe on standardised features: 0.1 is "
                            "robust; fine-tuning: try 0.01 and lower if the loss diverges)")
    train.add_argument("--batch-size", type=int, default=256,
                       help="probe batch in views; fine-tuning batch in clips (try 8)")
    train.add_argument("--weight-decay", type=float, default=0.0,
                       help="L2 weight decay (CVRL's linear eval uses 0)")
    parser.add_argument("--encode-batch-size", type=int, default=8,
                        help="views per forward pass of the frozen encoder")


def run(args: argparse.Namespace) -> int:
    result = classify.run(settings_from_args(classify.Settings, args))
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result["metrics"].items())
    print(f"classify ({result['mode']}, {result['branch']}) on {result['layout']} split "
          f"{result['split']}: {metrics} over {result['videos_evaluated']['test']} test videos "
          f"-> {args.out}")
    return 0
