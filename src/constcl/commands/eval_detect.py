"""``constcl eval detect``: flags -> :class:`constcl.eval.detect.Settings` -> ``run``."""

from __future__ import annotations

import argparse
from pathlib import Path

from constcl.commands.eval_args import add_encoder_arguments, settings_from_args
from constcl.eval import detect
from constcl.eval.detect.task import BOX_SOURCES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags; each is the :class:`constcl.eval.detect.Settings` field of that name."""
    add_encoder_arguments(parser)
    parser.add_argument("--data", required=True, type=Path,
                        help="AVA root holding annotations/ (or a folder holding ava/annotations/)")
    parser.add_argument("--videos", type=Path, default=None,
                        help="folder of the videos (default ROOT/videos, ROOT/videos_15min, "
                             "ROOT/../videos)")
    parser.add_argument("--boxes", choices=BOX_SOURCES, default="gt",
                        help="validation boxes: ground truth (mAP GT) or a detector's (mAP Det)")
    parser.add_argument("--detections", type=Path, default=None,
                        help="person-box CSV for --boxes detections "
                             "(default annotations/ava_val_predicted_boxes.csv)")
    parser.add_argument("--det-thresh", type=float, default=0.8,
                        help="keep detected boxes with score >= this (SlowFast AVA configs: 0.8; "
                             "PySlowFast default 0.9)")
    parser.add_argument("--fps", type=float, default=None,
                        help="frames per second for timestamp -> frame (default: the video's)")
    parser.add_argument("--time-offset", type=float, default=0.0,
                        help="second of the video's first frame: 0 for the synthetic world, 900 "
                             "for PySlowFast's 15-minute AVA cuts")
    views = parser.add_argument_group("clip")
    views.add_argument("--frames", type=int, default=32, help="frames per clip")
    views.add_argument("--stride", type=int, default=2, help="temporal stride between frames")
    views.add_argument("--size", type=int, default=256,
                       help="short side of the frames (use a multiple of 32, the res5 stride)")
    train = parser.add_argument_group("classifier")
    train.add_argument("--epochs", type=int, default=100, help="classifier epochs")
    train.add_argument("--lr", type=float, default=0.1,
                       help="peak SGD learning rate on standardised RoI features")
    train.add_argument("--batch-size", type=int, default=256, help="classifier batch in boxes")
    train.add_argument("--weight-decay", type=float, default=0.0, help="L2 weight decay")
    parser.add_argument("--encode-batch-size", type=int, default=8,
                        help="clips per forward pass of the frozen encoder")


def run(args: argparse.Namespace) -> int:
    result = detect.run(settings_from_args(detect.Settings, args))
    print(f"detect ({result['boxes']} boxes, {result['branch']}): frame mAP@0.5 "
          f"{result['metrics']['map']:.4f} over {result['num_classes']} classes, "
          f"{result['boxes_encoded']['val']} val boxes -> {args.out}")
    return 0
