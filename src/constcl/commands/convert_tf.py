"""``constcl convert tf CHECKPOINT OUT.safetensors``: TF Model Garden CVRL weights -> constcl.

The conversion is :func:`constcl.convert.cvrl.convert_cvrl` (name table, padding, input range
and BatchNorm epsilon are explained there); this module parses the flags and prints a summary.
TensorFlow is not needed.
"""

from __future__ import annotations

import argparse

from constcl.convert.cvrl import ConvertSettings, convert_cvrl

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``constcl convert tf``."""
    parser.add_argument("checkpoint", help="TF checkpoint: the ckpt-N prefix, its .index file, "
                        "the folder holding it, or a .tar.gz of that folder (e.g. the published "
                        "r3d_1x_k400_800ep.tar.gz)")
    parser.add_argument("out", help="output file, e.g. cvrl_k400/backbone.safetensors")
    parser.add_argument("--bn-epsilon", type=float, default=1e-5,
                        help="BatchNorm epsilon the TF model was built with (default 1e-5, the "
                        "CVRL experiments' norm_epsilon; Model Garden's ResNet3D default is "
                        "1e-3)")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the per-tensor crc32c checks (faster on large checkpoints)")


def run(args: argparse.Namespace) -> int:
    """Convert and print one summary line."""
    summary = convert_cvrl(ConvertSettings(checkpoint=args.checkpoint, out=args.out,
                                           bn_epsilon=args.bn_epsilon,
                                           verify_checksums=not args.no_verify))
    name, candidates = summary["checkpoint_name"], summary["candidates"]
    which = f"from {name}"
    if len(candidates) > 1:  # a folder or archive with several: say which one was taken
        others = ", ".join(c for c in candidates if c != name)
        which += f" (the newest of {len(candidates)}; also there: {others})"
    print(f"{summary['out']}: {summary['backbone']} backbone {which}, {summary['converted']} TF "
          f"variables converted (res5 copied to res5_global and res5_local), "
          f"{summary['head_skipped']} projection-head and {summary['ignored']} bookkeeping "
          f"variables left out; padding tf_same, input_norm unit")
    return 0
