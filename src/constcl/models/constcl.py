"""The ConST-CL model: backbone, Y-shaped res5, global and region heads, and the losses."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from constcl.losses import global_nt_xent, region_info_nce
from constcl.models.global_head import GlobalHead
from constcl.models.r3d import R3D, build_backbone, duplicate_res5
from constcl.models.region_head import RegionHead

VARIANTS = ("cvrl", "region", "constcl", "supervised")
REGION_VARIANTS = ("region", "constcl")  # the variants with a local branch and region loss
LOCAL_SOURCES = ("y", "shared", "res4")


@dataclass
class LossWeights:
    """Loss hyper-parameters: L = global_weight L_g + region_weight L_l (docs/spec.md section 3).

    Also the ``loss`` section of the pretraining config (``constcl.config``); each field's
    docstring is its help text (``constcl pretrain --list-config``).
    """

    global_temperature: float = 0.1
    """NT-Xent temperature tau_g (docs/spec.md section 3: 0.1)."""
    region_temperature: float = 0.2
    """Region InfoNCE temperature tau_l (docs/spec.md section 3: 0.2)."""
    global_weight: float = 1.0
    """Weight of the global loss (docs/spec.md section 3: 1.0)."""
    region_weight: float = 0.001
    """Weight of the region loss; the first knob an ablation sweeps."""


class ConSTCL(nn.Module):
    """ConST-CL and its ablations on one backbone.

    Args:
        backbone: an ``R3D``; its res5 feeds the global head.
        variant: ``cvrl`` (global loss only), ``region`` (plus region contrast without context)
            or ``constcl`` (the full method); ``supervised`` is the reference every
            self-supervised table carries: cross-entropy on class labels through a linear
            classifier on the pooled res5 (the ``global_head`` slot), no contrastive loss.
        local_source: what the region head reads: ``y`` (a second res5 on the res4 output, the
            default), ``shared`` (the global res5) or ``res4``.
        embed_dim: global embedding size (128).
        context_length: L_c, odd.
        decoder_layers: region decoder layers (3).
        decoder_units: region decoder units per layer (3).
        decoder_width: region decoder width (128).
        losses: temperatures and weights.
        num_classes: classes of the ``supervised`` variant (ignored by the others).
    """

    def __init__(self, backbone: R3D, variant: str = "constcl", local_source: str = "y",
                 embed_dim: int = 128, context_length: int = 5, decoder_layers: int = 3,
                 decoder_units: int = 3, decoder_width: int = 128,
                 losses: LossWeights | None = None, num_classes: int = 0) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant {variant!r} is unknown; allowed: {list(VARIANTS)}")
        if local_source not in LOCAL_SOURCES:
            raise ValueError(f"local_source {local_source!r} is unknown; "
                             f"allowed: {list(LOCAL_SOURCES)}")
        self.variant, self.local_source = variant, local_source
        self.losses = losses or LossWeights()
        self.backbone = backbone
        if variant == "supervised":
            if num_classes < 2:
                raise ValueError(f"variant 'supervised' needs num_classes >= 2; got {num_classes}")
            self.global_head = GlobalHead(backbone.out_channels, out_dim=num_classes,
                                          num_layers=0)  # pool -> Linear: a linear classifier
        else:
            self.global_head = GlobalHead(backbone.out_channels, out_dim=embed_dim)
        self.res5_local: nn.Module | None = None
        self.region_head: RegionHead | None = None
        if variant in REGION_VARIANTS:
            if local_source == "y":
                self.res5_local = duplicate_res5(backbone)
            channels = backbone.spec.out_channels[2 if local_source == "res4" else 3]
            self.region_head = RegionHead(channels, context_length, decoder_layers,
                                          decoder_units, decoder_width,
                                          use_context=variant == "constcl")

    def _local_map(self, res4: torch.Tensor, res5: torch.Tensor | None) -> torch.Tensor:
        if self.local_source == "y":
            return self.res5_local(res4)
        if self.local_source == "res4":
            return res4
        return res5 if res5 is not None else self.backbone.res5(res4)

    def forward(self, view_a: torch.Tensor, view_b: torch.Tensor,
                boxes_a: torch.Tensor | None = None, boxes_b: torch.Tensor | None = None,
                mask_a: torch.Tensor | None = None, mask_b: torch.Tensor | None = None,
                labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Losses and statistics for a batch of two views.

        Args:
            view_a: (B, 3, T, H, W) clips in [-1, 1]; row i of both views from video i.
            view_b: (B, 3, T, H, W) the other view.
            boxes_a: (B, K, 4) normalised key-frame boxes (not needed for ``cvrl``).
            boxes_b: (B, K, 4) likewise for view b.
            mask_a: (B, K) bool box validity (default: all valid).
            mask_b: (B, K) likewise for view b.
            labels: (B,) int class labels (only the ``supervised`` variant reads them).

        Returns: ``loss`` (weighted total), ``loss_global``, ``global_accuracy``,
        ``global_entropy`` and, for region variants, ``loss_region``, ``region_pos_sim_*`` /
        ``region_neg_sim_*``, ``region_match_accuracy`` / ``region_match_chance`` /
        ``region_contrast_accuracy`` (losses.region_info_nce) and, for ``constcl``,
        ``attn_entropy`` (the decoder's attention entropy / log N over valid boxes, 1.0 =
        uniform; RegionHead.attention_entropy). Both views go through the backbone as one
        batch of 2B.
        """
        batch = view_a.shape[0]
        res4 = self.backbone.forward_trunk(torch.cat([view_a, view_b]))["res4"]
        res5 = self.backbone.res5(res4)
        if self.variant == "supervised":
            return self._supervised(res5, labels)
        emb = self.global_head(res5)
        g = global_nt_xent(emb[:batch], emb[batch:], self.losses.global_temperature)
        out = {"loss_global": g["loss"], "global_accuracy": g["accuracy"],
               "global_entropy": g["entropy"]}
        loss = self.losses.global_weight * g["loss"]
        if self.region_head is not None:
            if boxes_a is None or boxes_b is None:
                raise ValueError(f"variant {self.variant!r} needs boxes_a and boxes_b")
            local = self._local_map(res4, res5)
            heads = self.region_head(local[:batch], local[batch:], boxes_a, boxes_b)
            valid = torch.ones(boxes_a.shape[:2], dtype=torch.bool, device=boxes_a.device)
            r = region_info_nce(heads["z_a2b"], heads["z_b2a"], heads["h_a"], heads["h_b"],
                                valid if mask_a is None else mask_a,
                                valid if mask_b is None else mask_b,
                                self.losses.region_temperature)
            loss = loss + self.losses.region_weight * r["loss"]
            out["loss_region"] = r.pop("loss")
            out.update({f"region_{k}": v for k, v in r.items()})
            if "attn_entropy_a2b" in heads:
                out["attn_entropy"] = _attention_statistic(
                    heads["attn_entropy_a2b"], heads["attn_entropy_b2a"],
                    valid if mask_a is None else mask_a, valid if mask_b is None else mask_b)
        out["loss"] = loss
        return out


    def _supervised(self, res5: torch.Tensor, labels: torch.Tensor | None
                    ) -> dict[str, torch.Tensor]:
        """Cross-entropy of both views' logits (2B, classes) against their video's label:
        ``loss`` = ``loss_supervised``, and ``train_accuracy`` (top-1 on this batch)."""
        if labels is None:
            raise ValueError("variant 'supervised' needs labels")
        logits = self.global_head(res5).float()
        target = torch.cat([labels, labels]).long()
        loss = F.cross_entropy(logits, target)
        accuracy = (logits.argmax(dim=1) == target).float().mean()
        return {"loss": loss, "loss_supervised": loss.detach(), "train_accuracy": accuracy}


def _attention_statistic(a2b: torch.Tensor, b2a: torch.Tensor, mask_a: torch.Tensor,
                         mask_b: torch.Tensor) -> torch.Tensor:
    """Mean of the per-query relative attention entropies (B, K) over the valid boxes of both
    directions (1.0 when there are none: no query attended to anything)."""
    values = torch.cat([a2b.flatten(), b2a.flatten()]).float()
    mask = torch.cat([mask_a.flatten(), mask_b.flatten()]).to(values.dtype)
    count = mask.sum()
    return torch.where(count > 0, (values * mask).sum() / count.clamp(min=1),
                       values.new_ones(()))


def build_model(backbone: str = "r3d50", variant: str = "constcl", local_source: str = "y",
                context_length: int = 5, zero_init_residual: bool = False,
                losses: LossWeights | None = None, input_norm: str = "none",
                padding: str = "torch", **head_kwargs: int) -> ConSTCL:
    """Build a ConST-CL model by backbone name; ``input_norm`` and ``padding`` go to the
    backbone (``models.r3d.INPUT_NORMS``, ``models.r3d.PADDINGS``; the second res5 copy gets
    the same padding), ``head_kwargs`` to ``ConSTCL`` (embed_dim, decoder_layers,
    decoder_units, decoder_width)."""
    net = build_backbone(backbone, zero_init_residual=zero_init_residual, input_norm=input_norm,
                         padding=padding)
    return ConSTCL(net, variant=variant, local_source=local_source,
                   context_length=context_length, losses=losses, **head_kwargs)
