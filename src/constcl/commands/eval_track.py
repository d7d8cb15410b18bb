"""``constcl eval track``: flags -> :class:`constcl.eval.track.Settings` -> ``run``."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from constcl.commands.eval_args import (
    add_encoder_arguments,
    add_frame_encoder_arguments,
    settings_from_args,
)
from constcl.eval import track
from constcl.eval.track.siamfc import CONFIG_HELP, FEATURE_NORMS, SiamFCConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags; each is the :class:`constcl.eval.track.Settings` field of that name (the
    SiamFC ones are the fields of its ``tracker``)."""
    add_encoder_arguments(parser)
    parser.add_argument("--data", required=True, type=Path,
                        help="OTB root (folders <Seq>/img + groundtruth_rect*.txt), or a "
                             "synthetic world root holding otb/")
    parser.add_argument("--sequences", type=int, default=None,
                        help="evaluate only N targets, spread evenly over the list sorted by "
                        "name; quick runs")
    add_frame_encoder_arguments(parser)
    parser.add_argument("--feature-norm", choices=FEATURE_NORMS, default="none",
                        help="none: correlate the features as they are (SiamFC); l2: unit-length "
                             "feature per cell first (the correlation sums cosines)")
    parser.add_argument("--center-kernel", action=argparse.BooleanOptionalAction, default=True,
                        help="zero-mean exemplar kernel per channel, so the common component "
                             "of frozen ReLU features does not reward busy regions")
    defaults = SiamFCConfig()
    for field in dataclasses.fields(SiamFCConfig):
        parser.add_argument("--" + field.name.replace("_", "-"), type=type(field.default),
                            default=getattr(defaults, field.name),
                            help=f"SiamFC: {CONFIG_HELP[field.name]} (default %(default)s)")


def run(args: argparse.Namespace) -> int:
    tracker = SiamFCConfig(**{f.name: getattr(args, f.name)
                              for f in dataclasses.fields(SiamFCConfig)})
    result = track.run(settings_from_args(track.Settings, args, tracker=tracker))
    m = result["metrics"]
    print(f"OTB OPE, {result['num_sequences']} targets, SiamFC on {result['stage']} (stride "
          f"{result['stride']}): precision@20px {m['precision_20']:.3f}  success AUC "
          f"{m['success_auc']:.3f}  success rate {m['success_rate']:.3f}  {m['fps']:.1f} fps")
    print(f"wrote {args.out / 'results.json'}, {', '.join(result['plots'])}")
    return 0
