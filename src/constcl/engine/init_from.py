"""``model.init_from``: start pretraining from a ``backbone.safetensors``.

The file is one written by ``constcl pretrain`` (``engine/export.py``) or by ``constcl convert
tf`` (the published CVRL weights, ``constcl.convert``): ``trunk.*`` initialises stem to res4,
``res5_global.*`` the backbone's res5 and ``res5_local.*`` the second res5 copy of the Y shape
(``res5_global.*`` when the file has no local copy). The heads keep their random
initialisation. Every parameter and buffer of the backbone and of the res5 copy must be in the
file, and every tensor of the file must find its place; otherwise nothing is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from constcl import backbone_file
from constcl.errors import ConstclError
from constcl.models import ConSTCL

log = logging.getLogger(__name__)

__all__ = ["check_init_from", "load_init_weights"]


def _where(path: Path) -> str:
    return f"model.init_from={str(path)!r}"


def check_init_from(path: str | Path, backbone: str, input_norm: str,
                    padding: str) -> dict[str, str]:
    """The file's metadata after checking (header only) that its backbone, input_norm and
    padding are the run's (``"none"`` / ``"torch"`` for files without the last two): the
    weights compute their features only with the normalisation and padding they were trained
    with. ConstclError naming the field and the value to set; FileNotFoundError."""
    path = Path(path).expanduser()
    meta = backbone_file.read_meta(path, _where(path))
    backbone_file.check_compatible(meta, _where(path), backbone=backbone, input_norm=input_norm,
                                   padding=padding, prefix="model.")
    return meta.to_metadata()


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str,
                 path: Path) -> None:
    """load_state_dict(strict) with one ConstclError naming missing / unexpected / misshaped."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ConstclError(f"{_where(path)} does not fit the {what}: missing "
                           f"{missing[:5]}, unexpected {unexpected[:5]}, shapes {shapes[:5]}")
    module.load_state_dict(state, strict=True)


def load_init_weights(model: ConSTCL, path: str | Path, backbone: str, input_norm: str,
                      padding: str) -> dict[str, str]:
    """Copy the file's backbone weights into ``model`` (in place); returns its metadata.

    ``backbone``, ``input_norm`` and ``padding`` are the run's and must equal the file's
    (:func:`check_init_from`). Raises ConstclError (or FileNotFoundError) naming the file and
    the mismatch, or the missing / unexpected tensors; nothing is loaded then.
    """
    path = Path(path).expanduser()
    meta, tensors = backbone_file.read(path, _where(path))
    backbone_file.check_compatible(meta, _where(path), backbone=backbone, input_norm=input_norm,
                                   padding=padding, prefix="model.")
    parts = backbone_file.unpack(tensors)
    if parts.other:
        raise ConstclError(f"{_where(path)} holds tensors that are not backbone weights: "
                           f"{parts.other[:5]}")
    state = parts.r3d_state(parts.res5_global)
    _load_strict(model.backbone, state, f"{backbone} backbone", path)
    if model.res5_local is not None:
        _load_strict(model.res5_local, parts.res5_local or parts.res5_global,
                     "local res5 copy", path)
    log.info("model.init_from: backbone%s initialised from %s (heads random)",
             " and local res5" if model.res5_local is not None else "", path)
    return meta.to_metadata()
