"""No evaluation number from NaN or inf: the checks every task runs on what it computes.

Each check raises :class:`constcl.errors.NonFiniteError` (one ``constcl: error:`` line, exit 2)
naming the task, the checkpoint and what was not finite, before any metric or ``results.json``
is computed from it. The metrics themselves also count a non-finite score as wrong
(``metrics``), so a caller that skips these checks still cannot get a good number from NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from constcl.errors import NonFiniteError

__all__ = ["check_finite", "check_finite_weights", "check_training", "finite_features"]


def _where(task: str, checkpoint: str | Path) -> str:
    return f"eval {task} (checkpoint {checkpoint})"


def check_finite(values: np.ndarray | torch.Tensor, *, task: str, checkpoint: str | Path,
                 what: str, hint: str = "") -> None:
    """Raise :class:`NonFiniteError` when ``values`` (any shape) holds NaN or inf.

    Args:
        values: the array or tensor to check.
        task: ``classify``, ``detect``, ``track`` or ``propagate``.
        checkpoint: the evaluated checkpoint (or ``random``).
        what: what ``values`` are, e.g. ``"pooled res5 features of the test views"``.
        hint: what to try, appended to the message.
    """
    if isinstance(values, torch.Tensor):
        if bool(torch.isfinite(values).all()):
            return
        values = values.detach().cpu().double().numpy()
    arr = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(arr)
    if finite.all():
        return
    nan = int(np.isnan(arr).sum())
    inf = int((~finite).sum()) - nan
    raise NonFiniteError(f"{_where(task, checkpoint)}: {what} are not finite ({nan} NaN and "
                         f"{inf} inf of {arr.size} values); no result was computed"
                         + (f"; {hint}" if hint else ""))


def check_finite_weights(module: nn.Module, *, task: str, checkpoint: str | Path, what: str,
                         hint: str = "") -> None:
    """Raise :class:`NonFiniteError` naming the first parameters or buffers of ``module`` that
    hold NaN or inf (e.g. a linear probe that diverged)."""
    bad = [name for name, t in [*module.named_parameters(), *module.named_buffers()]
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise NonFiniteError(f"{_where(task, checkpoint)}: {what} are not finite ({shown}); "
                             "no result was computed" + (f"; {hint}" if hint else ""))


def check_training(module: nn.Module, history: list[dict[str, float]], *, task: str,
                   checkpoint: str | Path, what: str, lr: float) -> None:
    """A trained classifier (or fine-tuned network) must have finite weights and a finite
    training loss in every epoch: a NaN loss means the training diverged even when the weights
    stayed finite (a sigmoid's gradient stays bounded while its logits overflow)."""
    hint = f"the training diverged: try a lower --lr than {lr:g}"
    check_finite_weights(module, task=task, checkpoint=checkpoint,
                         what=f"{what}'s weights after training", hint=hint)
    bad = [row["epoch"] for row in history if not math.isfinite(row.get("loss", 0.0))]
    if bad:
        raise NonFiniteError(f"{_where(task, checkpoint)}: {what}'s training loss is not finite "
                             f"(epochs {bad[0]}..{bad[-1]}: {len(bad)} of {len(history)}); no "
                             f"result was computed; {hint}")


def finite_features(fn: Callable[[torch.Tensor], torch.Tensor], *, task: str,
                    checkpoint: str | Path, what: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """``fn`` (tensor -> tensor) whose every output is checked with :func:`check_finite`."""

    def checked(x: torch.Tensor) -> torch.Tensor:
        out = fn(x)
        check_finite(out, task=task, checkpoint=checkpoint, what=what)
        return out

    return checked
