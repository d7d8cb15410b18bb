"""Atomic, safely loadable checkpoints.

A checkpoint is written to a temporary file in the same folder, flushed and fsync'ed, then renamed
over the final name (``os.replace`` is atomic on POSIX), and the folder is fsync'ed. A crash at any
moment leaves either the previous checkpoints or the new one, never a half-written file under a
checkpoint name. Loading uses ``torch.load(..., weights_only=True)``, so a checkpoint cannot run
code; everything saved is tensors, numbers, strings and containers of them.
"""

from __future__ import annotations

import io
import logging
import os
import re
import signal
from pathlib import Path
from typing import Any

import torch

from constcl.errors import ConstclError, torch_load_reason, writing
from constcl.faults import FAULT_ENV, fault, kill_on_fault  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

_NAME = re.compile(r"^step_(\d{8})\.pt$")



class CheckpointReadError(ConstclError, RuntimeError):
    """A checkpoint file that cannot be loaded (truncated, not a checkpoint, ...)."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files are ignored)."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, step: int, keep: int) -> Path:
    """Write ``state`` atomically as the checkpoint of ``step``; keep the newest ``keep``."""
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getbuffer()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with writing(path), open(tmp, "wb") as f:  # an error names the checkpoint
            if fault("kill_during_checkpoint", step):
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
                os.kill(os.getpid(), signal.SIGKILL)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError:  # disk full, size limit: no half file left behind
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    for old in list_checkpoints(run_dir)[:-keep]:
        old.unlink(missing_ok=True)
    for stale in path.parent.glob(".step_*.tmp*"):  # left by a crash mid-write
        if not stale.name.endswith(f".tmp{os.getpid()}"):
            stale.unlink(missing_ok=True)
    kill_on_fault("kill_after_checkpoint", step)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True); a clear error for a missing or bad file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # truncated or foreign file
        raise CheckpointReadError(f"checkpoint {str(path)!r} cannot be read: "
                                  f"{torch_load_reason(err)}") from err


def latest_loadable(run_dir: str | Path) -> tuple[Path, dict[str, Any]] | None:
    """Newest checkpoint of the run that loads; unreadable ones are reported and skipped."""
    for path in reversed(list_checkpoints(run_dir)):
        try:
            return path, load_checkpoint(path)
        except RuntimeError as err:
            log.warning("skipping unreadable checkpoint: %s", err)
    return None


def rng_state() -> dict[str, Any]:
    import random

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": list(random.getstate())}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
