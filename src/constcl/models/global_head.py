"""Global projection head (docs/spec.md section 2): pooled res5 -> 128-d embedding for NT-Xent."""

from __future__ import annotations

import torch
from torch import nn


class GlobalHead(nn.Module):
    """Global average pool -> ``num_layers`` x [Linear (no bias) -> BN -> ReLU] -> Linear.

    Input: res5 map (B, C, T, H, W) or an already pooled (B, C) tensor. Output: (B, out_dim),
    not normalised (the loss normalises). Hidden width defaults to C (2048 for R3D-50).
    """

    def __init__(
        self, in_dim: int, hidden_dim: int | None = None, out_dim: int = 128, num_layers: int = 3
    ) -> None:
        super().__init__()
        hidden_dim = hidden_dim or in_dim
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers):
            layers += [nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim),
                       nn.ReLU(inplace=True)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:
            x = x.mean(dim=(2, 3, 4))
        return self.mlp(x)
