"""Relative update size per part of the network: the check that every branch trains.

``||w_after - w_before|| / ||w_before||`` over all parameters of a part, measured across one
optimiser step (for SGD that is ``||lr * update|| / ||w||``). Parts: ``trunk`` (stem..res4),
``res5_global``, ``res5_local``, ``global_head``, ``region_head``; parts a variant lacks are
left out. Snapshots are taken only on logged steps, so the cost is one copy of the weights per
log interval.
"""

from __future__ import annotations

import torch
from torch import nn


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
    def after(self) -> dict[str, float]:
        if self._saved is None:
            raise RuntimeError("UpdateMonitor.after() without before()")
        out = {}
        for key, params in self.parts.items():
            old = self._saved[key]
            delta = torch.sqrt(sum(((p.float() - o.float()) ** 2).sum()
                                   for p, o in zip(params, old, strict=True)))
            norm = torch.sqrt(sum((o.float() ** 2).sum() for o in old))
            out[f"update_ratio_{key}"] = float(delta / norm.clamp_min(1e-12))
        self._saved = None
        return out
