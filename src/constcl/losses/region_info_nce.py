"""Region instance InfoNCE, argmax matching of independent boxes (docs/spec.md section 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from constcl import dist

STAT_KEYS = ("pos_sim_mean", "pos_sim_min", "pos_sim_max",
             "neg_sim_mean", "neg_sim_min", "neg_sim_max",
             "match_accuracy", "match_chance", "contrast_accuracy")


def match_boxes(
    h_a: torch.Tensor, h_b: torch.Tensor, mask_a: torch.Tensor, mask_b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive partner of every box: row-wise (a->b) and column-wise (b->a) argmax of cosine.

    Args: h_a, h_b (B, K, C) L2-normalised; mask_a, mask_b (B, K) bool.
    Returns: idx_a2b (B, K) index into view b's boxes, idx_b2a (B, K) index into view a's boxes;
    only valid boxes are candidates (entries for invalid queries are arbitrary).
    """
    sim = torch.einsum("bnc,bmc->bnm", h_a, h_b)
    idx_a2b = sim.masked_fill(~mask_b[:, None, :], float("-inf")).argmax(dim=2)
    idx_b2a = sim.masked_fill(~mask_a[:, :, None], float("-inf")).argmax(dim=1)
    return idx_a2b, idx_b2a


def _one_direction(
    z: torch.Tensor, target: torch.Tensor, pos_idx: torch.Tensor,
    query_valid: torch.Tensor, target_valid: torch.Tensor, temperature: float,
) -> dict[str, torch.Tensor]:
    """InfoNCE of translated queries z (B, K, C) against the other view's boxes (B, K, C)."""
    batch, k, c = z.shape
    target_all = dist.gather_with_grad(target)
    target_valid_all = dist.gather_no_grad(target_valid)
    own = torch.arange(batch, device=z.device) + dist.rank() * batch

    positive = target.gather(1, pos_idx[..., None].expand(-1, -1, c))
    pos_sim = (z * positive).sum(dim=-1)  # (B, K)
    neg_sim = torch.einsum("bkc,pqc->bkpq", z, target_all)  # (B, K, B_global, K)
    other_video = own[:, None] != torch.arange(target_all.shape[0], device=z.device)[None, :]
    neg_valid = (other_video[:, :, None] & target_valid_all[None]).unsqueeze(1)  # (B,1,Bg,K)
    neg_logits = (neg_sim / temperature).masked_fill(~neg_valid, float("-inf"))
    logits = torch.cat([pos_sim[..., None] / temperature, neg_logits.flatten(2)], dim=2)
    per_query = torch.logsumexp(logits, dim=2) - pos_sim / temperature  # (B, K)

    # Normalise by the number of valid queries in the *global* batch, times the world size, so
    # that DDP's gradient averaging reproduces the single-process mean over all valid queries.
    qv = query_valid.float()
    global_count = dist.all_reduce_sum_no_grad(qv.sum()).clamp(min=1.0)
    loss = (per_query * qv).sum() * dist.world_size() / global_count
    stats = _statistics(pos_sim.detach(), neg_sim.detach(), query_valid,
                        neg_valid.expand_as(neg_sim))
    stats.update(_matching(z.detach(), target.detach(), pos_idx, query_valid, target_valid,
                           pos_sim.detach(), neg_logits.detach() * temperature))
    return {"loss": loss, **stats}


def _matching(z: torch.Tensor, target: torch.Tensor, pos_idx: torch.Tensor,
              query_valid: torch.Tensor, target_valid: torch.Tensor, pos_sim: torch.Tensor,
              neg_sim: torch.Tensor) -> dict[str, torch.Tensor]:
    """Does a translated box pick its partner? Statistics over the valid queries.

    ``match_accuracy``: the share of queries whose translation z (B, K, C) is closest (cosine)
    to its partner ``pos_idx`` among the *same video's* valid boxes of the other view, a choice
    the loss never trains directly (those boxes are not negatives); ``match_chance`` is that
    choice's chance level, the mean of 1 / (valid boxes of the other view).
    ``contrast_accuracy``: the share whose partner scores above every negative of the loss
    (``neg_sim`` (B, K, B_global, K), -inf where not a negative), the loss's own task.
    """
    own = torch.einsum("bkc,bmc->bkm", z, target).masked_fill(~target_valid[:, None, :],
                                                              float("-inf"))
    hit = (own.argmax(dim=2) == pos_idx).float()
    chance = (1.0 / target_valid.sum(dim=1).clamp(min=1).float())[:, None].expand_as(hit)
    beats = (pos_sim > neg_sim.flatten(2).amax(dim=2)).float()
    return {"match_accuracy": _masked_mean(hit, query_valid),
            "match_chance": _masked_mean(chance, query_valid),
            "contrast_accuracy": _masked_mean(beats, query_valid)}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values[mask]; 0 when the mask is empty (the statistic is undefined)."""
    count = mask.sum()
    return torch.where(count > 0, (values * mask).sum() / count.clamp(min=1), values.new_zeros(()))


def _statistics(pos_sim, neg_sim, query_valid, neg_valid) -> dict[str, torch.Tensor]:
    """Cosine statistics over valid queries; neg min / max are per-query, then averaged."""
    zero = pos_sim.new_zeros(())
    has_query = query_valid.any()
    pos_min = torch.where(has_query, pos_sim.masked_fill(~query_valid, 2.0).min(), zero)
    pos_max = torch.where(has_query, pos_sim.masked_fill(~query_valid, -2.0).max(), zero)
    pair_valid = neg_valid & query_valid[:, :, None, None]
    per_query_has_neg = pair_valid.flatten(2).any(dim=2)  # (B, K)
    neg_min = neg_sim.masked_fill(~pair_valid, 2.0).flatten(2).min(dim=2).values
    neg_max = neg_sim.masked_fill(~pair_valid, -2.0).flatten(2).max(dim=2).values
    return {
        "pos_sim_mean": _masked_mean(pos_sim, query_valid),
        "pos_sim_min": pos_min,
        "pos_sim_max": pos_max,
        "neg_sim_mean": _masked_mean(neg_sim, pair_valid),
        "neg_sim_min": _masked_mean(neg_min, per_query_has_neg),
        "neg_sim_max": _masked_mean(neg_max, per_query_has_neg),
    }


def region_info_nce(
    z_a2b: torch.Tensor, z_b2a: torch.Tensor, h_a: torch.Tensor, h_b: torch.Tensor,
    mask_a: torch.Tensor, mask_b: torch.Tensor, temperature: float = 0.2,
) -> dict[str, torch.Tensor]:
    """Region InfoNCE, averaged over the two directions a->b and b->a.

    Args:
        z_a2b: (B, K, C) region features of view a translated into view b by the region head;
        z_b2a: (B, K, C) likewise for b -> a.
        h_a: (B, K, C) RoI features of view a's boxes (the targets).
        h_b: (B, K, C) likewise for view b.
        mask_a: (B, K) bool validity of view a's boxes.
        mask_b: (B, K) likewise for view b.
        temperature: tau_l.
    All four feature tensors are L2-normalised here.

    For video i, the positive of query n of view a is box m(n) = argmax_j cos(h_a[i, n], h_b[i, j])
    over valid j; negatives are all valid view-b boxes of every *other* video in the global
    batch (other boxes of the same video are neither). Queries count when they are valid and
    their video has at least one valid box in the other view. Loss per direction: mean over
    counted queries (0 if none); total = (L_a2b + L_b2a) / 2.

    Returns: ``loss`` and ``pos_sim_*`` / ``neg_sim_*`` (mean, min, max) cosine statistics, each
    averaged over the two directions; a statistic is 0 where it is undefined (no negatives).
    """
    if not (z_a2b.shape == z_b2a.shape == h_a.shape == h_b.shape) or h_a.dim() != 3:
        raise ValueError("z_a2b, z_b2a, h_a, h_b must all be (B, K, C); got "
                         f"{[tuple(t.shape) for t in (z_a2b, z_b2a, h_a, h_b)]}")
    if mask_a.shape != h_a.shape[:2] or mask_b.shape != h_b.shape[:2]:
        raise ValueError(f"masks must be (B, K) = {tuple(h_a.shape[:2])}; got "
                         f"{tuple(mask_a.shape)} and {tuple(mask_b.shape)}")
    z_a2b, z_b2a, h_a, h_b = (F.normalize(t.float(), dim=-1) for t in (z_a2b, z_b2a, h_a, h_b))
    mask_a, mask_b = mask_a.bool(), mask_b.bool()
    idx_a2b, idx_b2a = match_boxes(h_a, h_b, mask_a, mask_b)
    query_a = mask_a & mask_b.any(dim=1, keepdim=True)
    query_b = mask_b & mask_a.any(dim=1, keepdim=True)
    out_a = _one_direction(z_a2b, h_b, idx_a2b, query_a, mask_b, temperature)
    out_b = _one_direction(z_b2a, h_a, idx_b2a, query_b, mask_a, temperature)
    return {key: 0.5 * (out_a[key] + out_b[key]) for key in out_a}
