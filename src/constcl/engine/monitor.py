"""Relative update size per part of the network: the check that every branch trains.

``||w_after - w_before|| / ||w_before||`` over all parameters of a part, measured across one
optimiser step (for SGD that is ``||lr * update|| / ||w||``). Parts: ``trunk`` (stem..res4),
``res5_global``, ``res5_local``, ``global_head``, ``region_head``; parts a variant lacks are
left out. Snapshots are taken only on logged steps, so the cost is one copy of the weights per
log interval. :class:`HostReadCounter` counts the points where the host waits for the device.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


def network_parts(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Trainable parameters of each part of a ``ConSTCL`` (empty parts left out)."""
    backbone = model.backbone
    res5 = {id(p) for p in backbone.res5.parameters()}
    parts = {
        "trunk": [p for p in backbone.parameters() if id(p) not in res5],
        "res5_global": list(backbone.res5.parameters()),
        "res5_local": list(model.res5_local.parameters()) if model.res5_local is not None else [],
        "global_head": list(model.global_head.parameters()),
        "region_head": (list(model.region_head.parameters())
                        if model.region_head is not None else []),
    }
    return {k: [p for p in v if p.requires_grad] for k, v in parts.items() if v}


class UpdateMonitor:
    """``before()`` copies the weights; ``after()`` returns ``{"update_ratio_<part>": r}``."""

    def __init__(self, model: nn.Module) -> None:
        self.parts = network_parts(model)
        self._saved: dict[str, list[torch.Tensor]] | None = None

    @torch.no_grad()
    def before(self) -> None:
        self._saved = {k: [p.detach().clone() for p in ps] for k, ps in self.parts.items()}

    @torch.no_grad()
    def measure(self) -> dict[str, torch.Tensor]:
        """``{"update_ratio_<part>": r}`` as 0-dim device tensors (nothing read on the host)."""
        if self._saved is None:
            raise RuntimeError("UpdateMonitor.after() without before()")
        out = {}
        for key, params in self.parts.items():
            old = self._saved[key]
            delta = torch.sqrt(sum(((p.float() - o.float()) ** 2).sum()
                                   for p, o in zip(params, old, strict=True)))
            norm = torch.sqrt(sum((o.float() ** 2).sum() for o in old))
            out[f"update_ratio_{key}"] = delta / norm.clamp_min(1e-12)
        self._saved = None
        return out

    def after(self) -> dict[str, float]:
        """:meth:`measure`, read on the host."""
        return {k: float(v) for k, v in self.measure().items()}


class HostReadCounter(TorchDispatchMode):
    """Counts, while active, the operations that make the host wait for a GPU.

    * ``aten::_local_scalar_dense`` (what ``.item()``, ``float(t)``, ``bool(t)`` dispatch to)
      of a GPU tensor; of a CPU tensor it is counted apart, as
      ``aten::_local_scalar_dense (cpu)``: no wait on a GPU machine, but on a CPU-only run
      the place where a GPU run would read;
    * ``d2h``: a copy from a GPU to the CPU (``aten::_to_copy`` / ``aten::copy_``: ``.cpu()``,
      ``.tolist()``, ``.numpy()`` after ``.cpu()``);
    * ``h2d``: a blocking copy from the CPU to a GPU (``.to("cuda")`` without
      ``non_blocking``, ``new_tensor([...])`` of a GPU tensor): PyTorch synchronises after it;
    * ``aten::nonzero`` / ``masked_select`` / ``unique`` ... of a GPU tensor (output size
      depends on the data, so the host waits for it; boolean-mask indexing is one).

    ``paused()`` stops counting (e.g. while data is produced); ``counts`` maps each name to its
    count, ``total`` sums them.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self._paused = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @contextmanager
    def paused(self):
        was, self._paused = self._paused, True
        try:
            yield
        finally:
            self._paused = was

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = None if self._paused else _host_read_kind(func, args, kwargs)
        if kind is not None:
            self.counts[kind] += 1
        return func(*args, **kwargs)


_DATA_DEPENDENT = ("aten::nonzero", "aten::masked_select", "aten::unique", "aten::_unique2",
                   "aten::unique_consecutive", "aten::unique_dim")


def _host_read_kind(func, args, kwargs) -> str | None:
    aten = torch.ops.aten
    if func is aten._local_scalar_dense.default:
        return "aten::_local_scalar_dense" + (" (cpu)" if args[0].device.type == "cpu" else "")
    if func.name() in _DATA_DEPENDENT:
        first = args[0] if args and isinstance(args[0], torch.Tensor) else None
        return func.name() if first is not None and first.device.type != "cpu" else None
    if func is aten._to_copy.default:
        source, target = args[0].device.type, kwargs.get("device")
        target = torch.device(target).type if target is not None else source
        blocking = not kwargs.get("non_blocking", False)
    elif func is aten.copy_.default:
        source, target, blocking = args[1].device.type, args[0].device.type, not (
            args[2] if len(args) > 2 else kwargs.get("non_blocking", False))
    else:
        return None
    if source != "cpu" and target == "cpu":
        return "d2h"
    if source == "cpu" and target not in ("cpu", "meta") and blocking:
        return "h2d"
    return None
