"""Linear classifiers trained on frozen (cached) features: the linear probe of ``classify``
and the multi-label RoI classifier of ``detect``.

The probe is ``Linear(standardise(x))``. Standardisation uses the training features' per-dim
mean and standard deviation, frozen: a BatchNorm without affine parameters in eval mode, as
MAE's linear probe puts in front of its head. It makes one learning rate work for encoders
whose feature scales differ by orders of magnitude (random init vs. pretrained), and it is
still a linear classifier of the raw features. Weights start at zero (the loss is convex, so
the result depends only on the data order, which the seed fixes).

Training: SGD with momentum, no weight decay by default (CVRL's linear eval uses
``l2_weight_decay: 0``), a per-step learning rate with 5 % linear warm-up and cosine decay
(``constcl.schedule.warmup_cosine``). Loss: softmax cross-entropy for single-label data
(``labels`` int ``(N,)``) or sigmoid binary cross-entropy for multi-label data (``labels``
float ``(N, C)`` of 0/1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from constcl.schedule import warmup_cosine

__all__ = ["LinearProbe", "ProbeConfig", "fit_linear_probe", "predict"]


@dataclass(frozen=True)
class ProbeConfig:
    """Classifier training. ``lr`` is the peak rate; ``epochs`` passes over the features."""

    epochs: int = 100
    lr: float = 0.1
    batch_size: int = 256
    weight_decay: float = 0.0
    momentum: float = 0.9
    warmup_fraction: float = 0.05
    seed: int = 0


class LinearProbe(nn.Module):
    """``(N, D)`` features -> ``(N, C)`` logits: frozen standardisation, then ``nn.Linear``."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.linear = nn.Linear(mean.numel(), num_classes)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear((x - self.mean) / self.std)


def _loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.dtype == torch.int64:
        return F.cross_entropy(logits, labels)
    return F.binary_cross_entropy_with_logits(logits, labels)


def fit_linear_probe(
    features: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    cfg: ProbeConfig,
    evaluate: Callable[[LinearProbe], dict[str, float]] | None = None,
) -> tuple[LinearProbe, list[dict[str, float]]]:
    """Train a linear probe on CPU (features are small once pooled).

    Args:
        features: ``(N, D)`` float.
        labels: ``(N,)`` int classes (softmax CE) or ``(N, C)`` 0/1 floats (sigmoid BCE).
        num_classes: ``C``.
        evaluate: called after every epoch with the probe in eval mode; its metrics are added
            to that epoch's history row (e.g. validation accuracy for the training curve).

    Returns:
        (probe in eval mode, history: one dict per epoch with ``epoch``, ``loss`` (mean training
        loss), ``lr`` (last step's rate), ``train_acc`` (single-label only) and ``evaluate``'s
        keys).
    """
    x = torch.as_tensor(features, dtype=torch.float32)
    multilabel = np.asarray(labels).ndim == 2
    y = torch.as_tensor(labels, dtype=torch.float32 if multilabel else torch.int64)
    if x.ndim != 2 or len(y) != len(x) or len(x) == 0:
        raise ValueError(f"need (N, D) features and N labels; got {tuple(x.shape)}, {len(y)}")
    probe = LinearProbe(x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6), num_classes)
    opt = torch.optim.SGD(probe.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                          weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    lrs = warmup_cosine(cfg.lr, total, round(cfg.warmup_fraction * total))
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    step = 0
    for epoch in range(cfg.epochs):
        probe.train()
        order = torch.randperm(len(x), generator=gen)
        loss_sum, correct = 0.0, 0
        for s in range(steps_per_epoch):
            idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
            for group in opt.param_groups:
                group["lr"] = float(lrs[step])
            logits = probe(x[idx])
            loss = _loss(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            loss_sum += loss.item() * len(idx)
            if not multilabel:
                correct += int((logits.argmax(1) == y[idx]).sum())
        probe.eval()
        row = {"epoch": epoch + 1, "loss": loss_sum / len(x), "lr": float(lrs[step - 1])}
        if not multilabel:
            row["train_acc"] = correct / len(x)
        if evaluate is not None:
            row.update(evaluate(probe))
        history.append(row)
    return probe.eval(), history


@torch.no_grad()
def predict(probe: nn.Module, features: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """``(N, D)`` features -> ``(N, C)`` logits as float64 numpy."""
    x = torch.as_tensor(features, dtype=torch.float32)
    out = [probe(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().numpy() if out else np.zeros((0, 0))
