"""The backbone file, ``backbone.safetensors``: its layout, its metadata, writing and reading it.

Written by ``constcl pretrain`` (``engine/export.py``) and ``constcl convert tf``
(``convert/cvrl.py``); read by ``model.init_from`` (``engine/init_from.py``), by every evaluation
(``eval/encoder.py``) and by ``constcl.load_encoder`` (``features/encoder.py``). This module is
the one place that knows the format; it imports nothing above ``constcl.models``.

**Tensors.** ``trunk.*`` (stem to res4), ``res5_global.*`` (res5 copy 1, feeding the global
head) and ``res5_local.*`` (copy 2 of the Y shape, feeding the region head; absent when the
model has none). The names after the prefix are those of ``models.r3d.R3D``'s state dict.

**Metadata** (strings, :class:`BackboneMeta`): ``backbone`` (``models.BACKBONES`` name),
``variant``, ``local_source``, ``input_norm`` (``models.r3d.INPUT_NORMS``; ``"none"`` for files
that predate the field), ``padding`` (``models.r3d.PADDINGS``; ``"torch"`` likewise), ``config``
(the whole config as JSON), ``format`` (:data:`FORMAT`) and any further fields of a writer
(``conversion``: the converter's record). The network computes its features only with the
input normalisation and padding it was trained with, so every reader builds it with them and
refuses a caller that asks for others (:func:`check_compatible`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from constcl.errors import ConstclError, NonFiniteError, new_file_mode, writing
from constcl.models.r3d import INPUT_NORMS, PADDINGS

__all__ = ["DEFAULT_INPUT_NORM", "DEFAULT_PADDING", "FORMAT", "BackboneMeta", "BackboneParts",
           "BackboneMismatch", "check_compatible", "check_finite", "pack", "read",
           "read_meta", "unpack", "write"]

FORMAT = "constcl-backbone-v1"
DEFAULT_INPUT_NORM = "none"  # files written before input_norm was recorded
DEFAULT_PADDING = "torch"  # files written before padding was recorded
TRUNK, RES5_GLOBAL, RES5_LOCAL = "trunk.", "res5_global.", "res5_local."
_NAMED = ("backbone", "variant", "local_source", "input_norm", "padding", "config", "format")
_HINT = "use a backbone.safetensors from `constcl pretrain` or `constcl convert tf`"


class BackboneMismatch(ConstclError, ValueError):
    """The file's backbone, input_norm or padding is not the one asked for."""


@dataclass(frozen=True)
class BackboneMeta:
    """The metadata of a backbone file (module docstring), with the defaults of older files.

    ``config`` is the JSON text of the config that trained the weights; ``extra`` holds the
    writer's further string fields (e.g. ``conversion``).
    """

    backbone: str | None = None
    variant: str | None = None
    local_source: str | None = None
    input_norm: str = DEFAULT_INPUT_NORM
    padding: str = DEFAULT_PADDING
    config: str = "{}"
    format: str = FORMAT
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: Mapping[str, Any], **extra: str) -> BackboneMeta:
        """The metadata of weights trained with ``config`` (a config as a nested dict, at least
        its ``model`` section: backbone, variant, local_source, optionally input_norm and
        padding)."""
        m = config["model"]
        return cls(backbone=m["backbone"], variant=m["variant"], local_source=m["local_source"],
                   input_norm=m.get("input_norm", DEFAULT_INPUT_NORM),
                   padding=m.get("padding", DEFAULT_PADDING), config=json.dumps(config),
                   extra=dict(extra))

    @classmethod
    def from_metadata(cls, raw: Mapping[str, str]) -> BackboneMeta:
        """Parse a file's metadata dict; absent fields take their defaults."""
        named = {k: raw[k] for k in _NAMED if k in raw}
        return cls(**named, extra={k: v for k, v in raw.items() if k not in _NAMED})

    def to_metadata(self) -> dict[str, str]:
        """The metadata dict to write (fields that are None are left out)."""
        named = {k: getattr(self, k) for k in _NAMED}
        return {**{k: v for k, v in named.items() if v is not None}, **self.extra}


@dataclass
class BackboneParts:
    """A file's tensors by part, prefixes removed; ``other`` lists keys of no part."""

    trunk: dict[str, torch.Tensor]
    res5_global: dict[str, torch.Tensor]
    res5_local: dict[str, torch.Tensor]
    other: list[str]

    def r3d_state(self, res5: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """State dict of an ``R3D`` whose res5 is ``res5`` (one of the two copies)."""
        state = dict(self.trunk)
        state.update({f"res5.{k}": v for k, v in res5.items()})
        return state


def pack(backbone_state: Mapping[str, torch.Tensor],
         res5_local: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """An ``R3D`` state dict (its ``res5.*`` is the global copy) and the second res5 copy's
    state dict (None: no local copy) -> the file's tensors (detached, CPU, contiguous)."""
    tensors: dict[str, torch.Tensor] = {}
    for name, value in backbone_state.items():
        key = f"{RES5_GLOBAL}{name[5:]}" if name.startswith("res5.") else f"{TRUNK}{name}"
        tensors[key] = value
    for name, value in (res5_local or {}).items():
        tensors[f"{RES5_LOCAL}{name}"] = value
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def unpack(tensors: Mapping[str, torch.Tensor]) -> BackboneParts:
    """The file's tensors by part (:class:`BackboneParts`)."""
    parts: dict[str, dict[str, torch.Tensor]] = {TRUNK: {}, RES5_GLOBAL: {}, RES5_LOCAL: {}}
    other = []
    for key, value in tensors.items():
        prefix = next((p for p in parts if key.startswith(p)), None)
        if prefix is None:
            other.append(key)
        else:
            parts[prefix][key[len(prefix):]] = value
    return BackboneParts(parts[TRUNK], parts[RES5_GLOBAL], parts[RES5_LOCAL], sorted(other))


def write(path: str | Path, tensors: Mapping[str, torch.Tensor], meta: BackboneMeta) -> Path:
    """Write the file atomically (a temporary file beside it, then a rename), readable as any
    new file of this process (safetensors creates its files 0600; weights are shared). A full
    disk or a size limit raises ``OutputError`` naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with writing(path):
            save_file(dict(tensors), str(tmp), metadata=meta.to_metadata())
            os.chmod(tmp, new_file_mode())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)
    return path


def _open(path: Path, where: str, tensors: bool
          ) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            return raw, {k: f.get_tensor(k) for k in f.keys()} if tensors else {}  # noqa: SIM118
    except SafetensorError as err:
        raise ConstclError(f"{where} is not a readable safetensors file ({err}); {_HINT}"
                           ) from err


def _parse(raw: Mapping[str, str], where: str) -> BackboneMeta:
    meta = BackboneMeta.from_metadata(raw)
    if meta.input_norm not in INPUT_NORMS:
        raise ValueError(f"{where}: metadata input_norm={meta.input_norm!r} is unknown; "
                         f"allowed: {list(INPUT_NORMS)}")
    if meta.padding not in PADDINGS:
        raise ValueError(f"{where}: metadata padding={meta.padding!r} is unknown; allowed: "
                         f"{list(PADDINGS)}")
    return meta


def read_meta(path: str | Path, where: str | None = None) -> BackboneMeta:
    """The file's metadata (the header alone is read). ``where`` names the file in errors
    (default ``checkpoint 'PATH'``): FileNotFoundError, ``ConstclError`` for a file that is not
    safetensors, ValueError for an unknown input_norm or padding."""
    path = Path(path)
    where = where or f"checkpoint {str(path)!r}"
    raw, _ = _open(path, where, tensors=False)
    return _parse(raw, where)


def read(path: str | Path, where: str | None = None
         ) -> tuple[BackboneMeta, dict[str, torch.Tensor]]:
    """(metadata, tensors) of the file, opened once; errors as :func:`read_meta`."""
    path = Path(path)
    where = where or f"checkpoint {str(path)!r}"
    raw, tensors = _open(path, where, tensors=True)
    return _parse(raw, where), tensors


def check_compatible(meta: BackboneMeta, where: str, *, backbone: str | None = None,
                     input_norm: str | None = None, padding: str | None = None,
                     prefix: str = "", optional: bool = False) -> None:
    """Raise :class:`BackboneMismatch` when the file's backbone, input_norm or padding differs
    from the one asked for (None: any; a file without a backbone name fits any).

    The message names the file (``where``), the field (``prefix`` + name, e.g. ``model.`` for
    the config's) and the value to set; ``optional``: the caller may also leave it unset.
    """
    wanted = {"backbone": backbone, "input_norm": input_norm, "padding": padding}
    for key, value in wanted.items():
        stored = getattr(meta, key)
        if value is None or stored is None or stored == value:
            continue
        name = f"{prefix}{key}"
        advice = f"set {name}={stored}" + (" or leave it unset" if optional else "")
        raise BackboneMismatch(f"{where} was made with {name}={stored!r}, not {name}="
                               f"{value!r}; {advice}")


def check_finite(tensors: Mapping[str, torch.Tensor], where: str) -> None:
    """:class:`NonFiniteError` naming the tensors that hold NaN or inf (a few corrupted bytes,
    or weights exported from a run that diverged)."""
    bad = [k for k, t in sorted(tensors.items())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteError(f"{where}: {len(bad)} tensor(s) hold NaN or inf ({shown}); the "
                             "file is damaged or comes from a run that diverged, and nothing "
                             "computed from it would mean anything")
