"""The frozen network every evaluation reads: which checkpoint and branch, and loading it.

``load_backbone`` turns a ``backbone.safetensors`` (or None for random weights) into an ``R3D``.
Every task's settings name the network with the same fields (:class:`EncoderChoice`:
``checkpoint``, ``backbone``, ``branch``, ``input_norm``, ``seed``); ``load_encoder`` builds it
from them and ``encoder_identity`` is the part of a feature-cache key that names it (a hash of
the checkpoint's tensors and metadata, or backbone name, input normalisation and seed for the
random-init baseline).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors import safe_open

from constcl import backbone_file
from constcl.models.r3d import R3D, build_backbone

log = logging.getLogger(__name__)

BRANCHES = ("global", "local")
RANDOM_CHECKPOINT = "random"


class EncoderChoice(Protocol):
    """The fields of every task's settings that name the frozen network."""

    checkpoint: str | Path  # backbone.safetensors, or "random" for the random-init baseline
    backbone: str | None  # family member; read from the checkpoint's metadata when None
    branch: str  # "global" (res5 copy 1) or "local" (copy 2)
    input_norm: str | None  # random init: None means "none"; a checkpoint's is in its metadata
    seed: int  # seed of the random-init weights


def checkpoint_path(choice: EncoderChoice) -> Path | None:
    """The checkpoint file, or None for ``checkpoint="random"``."""
    return None if str(choice.checkpoint) == RANDOM_CHECKPOINT else Path(choice.checkpoint)


def check_encoder_choice(choice: EncoderChoice) -> None:
    """Raise ``ValueError`` before any data is read if the network cannot be built."""
    if choice.branch not in BRANCHES:
        raise ValueError(f"branch must be one of {list(BRANCHES)}; got {choice.branch!r}")
    path = checkpoint_path(choice)
    if path is None and choice.backbone is None:
        raise ValueError("checkpoint 'random' needs a backbone name (e.g. r3d50)")
    if path is not None:  # the header alone
        where = f"checkpoint {str(path)!r}"
        backbone_file.check_compatible(backbone_file.read_meta(path, where), where,
                                       backbone=choice.backbone, input_norm=choice.input_norm,
                                       optional=True)


def load_encoder(choice: EncoderChoice) -> R3D:
    """The frozen backbone (eval mode, so BatchNorm uses its running statistics).

    A random-init network is drawn under ``torch.manual_seed(choice.seed)`` so that the same
    seed gives the same weights and the feature cache stays valid.
    """
    path = checkpoint_path(choice)
    if path is None:
        if choice.backbone is None:
            raise ValueError("checkpoint 'random' needs a backbone name (e.g. r3d50)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(choice.seed)
            return load_backbone(None, choice.branch, choice.backbone,
                                 input_norm=choice.input_norm)
    return load_backbone(path, choice.branch, choice.backbone, input_norm=choice.input_norm)


def weights_digest(path: str | Path) -> str:
    """sha256 of a safetensors file's content: every tensor's name, dtype, shape and bytes in
    sorted name order, then the metadata items sorted. Unlike the file's own hash it does not
    change when the same weights are exported again (safetensors writes its metadata in an
    order that differs from process to process). Computed once per file version: every task
    asks for it per feature cache (classify and detect twice, propagate once per sequence)."""
    real = Path(path).resolve()
    st = real.stat()
    return _weights_digest(str(real), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _weights_digest(path: str, inode: int, size: int, mtime_ns: int) -> str:
    """:func:`weights_digest` of one file version (inode, size and mtime key the cache; an
    export replaces the file by a rename, which gives it a new inode)."""
    h = hashlib.sha256()
    with safe_open(path, framework="pt") as f:
        for key in sorted(f.keys()):  # noqa: SIM118
            t = f.get_tensor(key).contiguous()
            h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        h.update(json.dumps(sorted((f.metadata() or {}).items())).encode())
    return h.hexdigest()


def encoder_identity(choice: EncoderChoice) -> dict[str, Any]:
    """What determines the encoder's weights, for cache keys (:func:`weights_digest` of the
    checkpoint, or backbone name + seed for random weights)."""
    path = checkpoint_path(choice)
    if path is None:
        identity = {"random": choice.backbone, "seed": choice.seed, "branch": choice.branch}
        if choice.input_norm not in (None, "none"):  # keeps the older caches' keys valid
            identity["input_norm"] = choice.input_norm
        return identity
    return {"weights_sha256": weights_digest(path), "backbone": choice.backbone,
            "branch": choice.branch}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available else cpu; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_backbone(checkpoint: str | Path | None, branch: str = "global",
                  backbone: str | None = None, input_norm: str | None = None) -> R3D:
    """An ``R3D`` whose res5 is the chosen copy, in eval mode.

    Args:
        checkpoint: a ``backbone.safetensors`` written by ``constcl pretrain`` (keys ``trunk.*``,
            ``res5_global.*``, ``res5_local.*``), or None for a randomly initialised network
            (the random-init baseline; needs ``backbone``).
        branch: ``global`` (res5 copy 1) or ``local`` (res5 copy 2 of the Y shape; for the
            ``shared`` variant both are the same res5).
        backbone: family member name; read from the file's metadata when None.
        input_norm: input normalisation (``models.r3d.INPUT_NORMS``). For a checkpoint it is
            read from the metadata (``"none"`` for older files) and must match when given; for
            random weights None means ``"none"``.

    The convolution padding (``models.r3d.PADDINGS``) is the checkpoint's metadata ``padding``
    (``"torch"`` for files without it; ``"tf_same"`` for weights converted from TensorFlow by
    ``constcl convert tf``); random weights use ``"torch"``.

    Raises FileNotFoundError for a missing file, ValueError for a missing branch or keys that
    do not fit (missing and unexpected keys are listed), and :class:`NonFiniteError` when a
    tensor of the file holds NaN or inf.
    """
    if branch not in BRANCHES:
        raise ValueError(f"branch must be one of {list(BRANCHES)}; got {branch!r}")
    if checkpoint is None:
        if backbone is None:
            raise ValueError("a random-init backbone needs the backbone name (e.g. r3d50)")
        return build_backbone(backbone, input_norm=input_norm or "none").eval()
    path = Path(checkpoint)
    where = f"checkpoint {str(path)!r}"
    meta, tensors = backbone_file.read(path, where)
    backbone_file.check_finite(tensors, where)
    backbone_file.check_compatible(meta, where, backbone=backbone, input_norm=input_norm,
                                   optional=True)
    name = backbone or meta.backbone
    if name is None:
        raise ValueError(f"{path} has no backbone name in its metadata; pass backbone=...")
    parts = backbone_file.unpack(tensors)
    res5 = parts.res5_local if branch == "local" else parts.res5_global
    if branch == "local" and not res5:
        if meta.local_source == "shared":
            res5 = parts.res5_global
        else:
            raise ValueError(f"{path} has no local res5 copy (variant {meta.variant!r}, "
                             f"local source {meta.local_source!r}); use branch='global'")
    state = parts.r3d_state(res5)
    net = build_backbone(name, input_norm=meta.input_norm, padding=meta.padding)
    result = net.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path} does not fit backbone {name!r}: missing {result.missing_keys[:5]}"
                         f", unexpected {result.unexpected_keys[:5]}")
    log.info("loaded %s backbone (%s branch) from %s", name, branch, path)
    return net.eval()


@torch.no_grad()
def pooled_res5(net: R3D, clips: torch.Tensor) -> torch.Tensor:
    """(B, 3, T, H, W) clips in [-1, 1] -> (B, C) globally pooled res5 features, without
    gradient (``R3D.forward``, the one place the pooling is written)."""
    return net(clips)
