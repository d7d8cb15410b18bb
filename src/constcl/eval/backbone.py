"""``load_backbone``: the one way every evaluation gets a frozen network from a checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import safe_open

from constcl.models.r3d import R3D, build_backbone

log = logging.getLogger(__name__)

BRANCHES = ("global", "local")


def load_backbone(checkpoint: str | Path | None, branch: str = "global",
                  backbone: str | None = None) -> R3D:
    """An ``R3D`` whose res5 is the chosen copy, in eval mode.

    Args:
        checkpoint: a ``backbone.safetensors`` written by ``constcl pretrain`` (keys ``trunk.*``,
            ``res5_global.*``, ``res5_local.*``), or None for a randomly initialised network
            (the random-init baseline; needs ``backbone``).
        branch: ``global`` (res5 copy 1) or ``local`` (res5 copy 2 of the Y shape; for the
            ``shared`` variant both are the same res5).
        backbone: family member name; read from the file's metadata when None.

    Raises FileNotFoundError for a missing file and ValueError for a missing branch or keys that
    do not fit (missing and unexpected keys are listed).
    """
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {list(BRANCHES)}; got {branch!r}")
    if checkpoint is None:
        if backbone is None:
            raise ValueError("a random-init backbone needs the backbone name (e.g. r3d50)")
        return build_backbone(backbone).eval()
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    name = backbone or meta.get("backbone")
    if name is None:
        raise ValueError(f"{path} has no backbone name in its metadata; pass backbone=...")
    res5_prefix = "res5_local." if branch == "local" else "res5_global."
    if branch == "local" and not any(k.startswith(res5_prefix) for k in tensors):
        if meta.get("local_source") == "shared":
            res5_prefix = "res5_global."
        else:
            raise ValueError(f"{path} has no local res5 copy (variant {meta.get('variant')!r}, "
                             f"local source {meta.get('local_source')!r}); use branch='global'")
    state = {}
    for key, value in tensors.items():
        if key.startswith("trunk."):
            state[key[len("trunk."):]] = value
        elif key.startswith(res5_prefix):
            state["res5." + key[len(res5_prefix):]] = value
    net = build_backbone(name)
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path} does not fit backbone {name!r}: missing {result.missing_keys[:5]}"
                         f", unexpected {result.unexpected_keys[:5]}")
    log.info("loaded %s backbone (%s branch) from %s", name, branch, path)
    return net.eval()


@torch.no_grad()
def pooled_features(net: R3D, clips: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) clips in [-1, 1] -> (B, C) globally pooled res5 features."""
    return net.forward_features(clips)["res5"].mean(dim=(2, 3, 4))
