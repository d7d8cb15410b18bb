"""What every ``constcl eval TASK`` shares: encoder arguments, device, output folder, JSON.

Every task takes the same encoder options (``add_encoder_arguments``) and builds its frozen
network with ``load_encoder``; ``encoder_identity`` is the part of a feature-cache key that
names the network (a content hash of the checkpoint file, or backbone name + seed for the
random-init baseline). Results go to ``--out`` as ``results.json`` via ``write_json``, which
writes NaN / inf as ``null`` so the file stays strict JSON.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from constcl.eval.backbone import BRANCHES, load_backbone
from constcl.models.r3d import R3D

__all__ = [
    "RANDOM_CHECKPOINT",
    "add_encoder_arguments",
    "encoder_identity",
    "file_digest",
    "load_encoder",
    "prepare_out_dir",
    "resolve_device",
    "to_jsonable",
    "write_json",
]

log = logging.getLogger(__name__)

RANDOM_CHECKPOINT = "random"


def add_encoder_arguments(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint --backbone --branch --seed --device --workers --out --cache-dir``."""
    parser.add_argument("--checkpoint", required=True,
                        help="backbone.safetensors written by `constcl pretrain`, or 'random' "
                             "for the random-init baseline (then --backbone is required)")
    parser.add_argument("--backbone", default=None,
                        help="backbone name (r3d50, r3d26, r3d_small, r3d_tiny); read from the "
                             "checkpoint's metadata when omitted")
    parser.add_argument("--branch", choices=BRANCHES, default="global",
                        help="which res5 copy to evaluate: global (copy 1) or local (copy 2)")
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


def checkpoint_path(args: argparse.Namespace) -> Path | None:
    """The checkpoint file, or None for ``--checkpoint random``."""
    return None if args.checkpoint == RANDOM_CHECKPOINT else Path(args.checkpoint)


def load_encoder(args: argparse.Namespace) -> R3D:
    """The frozen backbone (eval mode, so BatchNorm uses its running statistics).

    A random-init network is drawn under ``torch.manual_seed(args.seed)`` so that the same
    seed gives the same weights and the feature cache stays valid.
    """
    path = checkpoint_path(args)
    if path is None:
        if args.backbone is None:
            raise SystemExit("--checkpoint random needs --backbone (e.g. r3d50)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(args.seed)
            return load_backbone(None, args.branch, args.backbone)
    return load_backbone(path, args.branch, args.backbone)


def file_digest(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def encoder_identity(args: argparse.Namespace) -> dict[str, Any]:
    """What determines the encoder's weights, for cache keys."""
    path = checkpoint_path(args)
    if path is None:
        return {"random": args.backbone, "seed": args.seed, "branch": args.branch}
    return {"checkpoint_sha256": file_digest(path), "backbone": args.backbone,
            "branch": args.branch}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_out_dir(path: str | os.PathLike[str]) -> Path:
    """Create the output folder (and parents); existing files in it are overwritten later."""
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def to_jsonable(obj: Any) -> Any:
    """Numpy / torch scalars and arrays to Python, non-finite floats to None, Paths to str."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch arrays and scalars
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented strict JSON (NaN -> null) atomically; returns the path."""
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
    log.info("wrote %s", path)
    return path
