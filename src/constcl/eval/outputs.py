"""Where every evaluation writes: the output folder, strict JSON, file digests.

Results go to the task's ``out`` folder as ``results.json`` via ``write_json``, which writes
NaN / inf as ``null`` so the file stays strict JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from pathlib import Path
from typing import Any

from constcl.errors import DataFileError, writing

__all__ = ["file_digest", "prepare_out_dir", "safe_name", "to_jsonable", "write_json"]

log = logging.getLogger(__name__)

def safe_name(name: str, source: str | os.PathLike[str] | None = None,
              line: int | None = None) -> str:
    """``name`` when it can be one file or folder name under the output folder: not empty, no
    ``/`` or ``\\``, not ``.`` or ``..``, no NUL. Otherwise :class:`DataFileError` naming
    ``source`` and ``line`` where the name was read (ValueError when no source is given)."""
    bad = not name or name in (".", "..") or any(c in name for c in "/\\\0")
    if not bad:
        return name
    reason = (f"name {name!r} is not a plain file name (no path separators, '.' or '..'); "
              "it would be used for output paths")
    if source is None:
        raise ValueError(reason)
    raise DataFileError(source, reason, line)


def file_digest(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """sha256 of a file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
    try:
        with writing(path):  # a full disk or size limit names the file
            tmp.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    log.info("wrote %s", path)
    return path
