"""Flags every ``constcl eval TASK`` shares, and turning parsed flags into a task's settings."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, TypeVar

from constcl.eval.encoder import BRANCHES
from constcl.eval.frame_encoder import ENCODER_STAGES, FRAME_MODES
from constcl.models.r3d import INPUT_NORMS

T = TypeVar("T")


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint --backbone --branch --input-norm --seed --device --workers --out
    --cache-dir``
    (the fields of :class:`constcl.eval.settings.EncoderSettings`)."""
    parser.add_argument("--checkpoint", required=True,
                        help="backbone.safetensors written by `constcl pretrain`, or 'random' "
                             "for the random-init baseline (then --backbone is required)")
    parser.add_argument("--backbone", default=None,
                        help="backbone name (r3d50, r3d26, r3d_small, r3d_tiny); read from the "
                             "checkpoint's metadata when omitted")
    parser.add_argument("--branch", choices=BRANCHES, default="global",
                        help="which res5 copy to evaluate: global (copy 1) or local (copy 2)")
    parser.add_argument("--input-norm", choices=INPUT_NORMS, default=None,
                        help="input normalisation of a random-init network (default none); a "
                             "checkpoint's comes from its metadata")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random-init weights and of the classifier training")
    parser.add_argument("--device", default="auto",
                        help="'auto' (cuda when available), 'cpu', 'cuda', 'cuda:1', ...")
    parser.add_argument("--workers", type=int, default=2,
                        help="DataLoader worker processes that decode videos (0: in-process)")
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: results.json, plots, feature cache")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="feature-cache folder (default OUT/cache); share one between runs "
                             "to reuse encoded features across output folders")


def add_frame_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """``--stage --frame-mode --clip-len --threads`` (the fields of
    :class:`constcl.eval.settings.FrameEncoderSettings`): how images become feature maps."""
    parser.add_argument("--stage", choices=ENCODER_STAGES, default="res4",
                        help="which stage's map to use; res4 / res5 lose their stride to "
                             "dilation so every stage but res2 (stride 4) is at stride 8")
    parser.add_argument("--frame-mode", choices=FRAME_MODES, default="static",
                        help="static: a frame is an endless still clip (temporal kernels "
                             "summed, exact and cheapest); repeat: the frame repeated "
                             "--clip-len times, middle time slice")
    parser.add_argument("--clip-len", type=int, default=16,
                        help="clip length for --frame-mode repeat")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch during the run (0: leave torch's default). "
                             "Per-frame work is small; on a busy shared CPU 1 thread can be "
                             "several times faster than 2")


def settings_from_args(cls: type[T], args: argparse.Namespace, **extra: Any) -> T:
    """``cls(**fields)`` with every dataclass field of ``cls`` taken from ``args`` (same name),
    except those given in ``extra``. A bad value raises ``ValueError``, which ``constcl.cli.main``
    prints as one ``constcl: error: ...`` line."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)  # type: ignore[arg-type]
              if f.name not in extra and hasattr(args, f.name)}
    return cls(**values, **extra)
