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
from safetensors import SafetensorError, safe_open

from constcl.errors import ConstclError
from constcl.models import ConSTCL

log = logging.getLogger(__name__)

__all__ = ["check_init_from", "load_init_weights"]


def _read(path: Path, tensors: bool = True) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of the file; the tensors only when asked."""
    if not path.is_file():
        raise FileNotFoundError(f"model.init_from={str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return meta, {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
    except SafetensorError as err:
        raise ConstclError(f"model.init_from={str(path)!r} is not a readable safetensors file "
                           f"({err}); use a backbone.safetensors from `constcl pretrain` or "
                           "`constcl convert tf`") from err


def check_init_from(path: str | Path, backbone: str, input_norm: str,
                    padding: str) -> dict[str, str]:
    """The file's metadata after checking (header only) that its backbone, input_norm and
    padding are the run's (``"none"`` / ``"torch"`` for files without the last two): the
    weights compute their features only with the normalisation and padding they were trained
    with. ConstclError naming the field and the value to set; FileNotFoundError."""
    path = Path(path).expanduser()
    meta, _ = _read(path, tensors=False)
    stored = {"model.backbone": meta.get("backbone"),
              "model.input_norm": meta.get("input_norm", "none"),
              "model.padding": meta.get("padding", "torch")}
    wanted = {"model.backbone": backbone, "model.input_norm": input_norm,
              "model.padding": padding}
    for key, value in wanted.items():
        if stored[key] is not None and stored[key] != value:
            raise ConstclError(f"model.init_from={str(path)!r} was made with {key}="
                               f"{stored[key]}, this run has {key}={value}; set {key}="
                               f"{stored[key]}")
    return meta


def _load_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str,
                 path: Path) -> None:
    """load_state_dict(strict) with one ConstclError naming missing / unexpected / misshaped."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise ConstclError(f"model.init_from={str(path)!r} does not fit the {what}: missing "
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
    check_init_from(path, backbone, input_norm, padding)
    meta, tensors = _read(path)
    trunk = {k[len("trunk."):]: v for k, v in tensors.items() if k.startswith("trunk.")}
    res5 = {k[len("res5_global."):]: v for k, v in tensors.items()
            if k.startswith("res5_global.")}
    local = {k[len("res5_local."):]: v for k, v in tensors.items()
             if k.startswith("res5_local.")}
    other = sorted(k for k in tensors if not k.startswith(("trunk.", "res5_global.",
                                                            "res5_local.")))
    if other:
        raise ConstclError(f"model.init_from={str(path)!r} holds tensors that are not backbone "
                           f"weights: {other[:5]}")
    state = dict(trunk)
    state.update({f"res5.{k}": v for k, v in res5.items()})
    _load_strict(model.backbone, state, f"{backbone} backbone", path)
    if model.res5_local is not None:
        _load_strict(model.res5_local, local or res5, "local res5 copy", path)
    log.info("model.init_from: backbone%s initialised from %s (heads random)",
             " and local res5" if model.res5_local is not None else "", path)
    return meta
