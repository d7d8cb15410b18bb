"""Loop-based reference implementations of the two losses, written from docs/spec.md section 3."""

import math

import torch


def unit(v: torch.Tensor) -> torch.Tensor:
    return v / v.norm()


def naive_global(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """Sum over the two directions of the mean per-anchor NT-Xent, one anchor at a time."""
    n = a.shape[0]
    a = [unit(a[i]) for i in range(n)]
    b = [unit(b[i]) for i in range(n)]
    total = 0.0
    for anchors, others in ((a, b), (b, a)):
        direction = 0.0
        for i in range(n):
            pos = torch.exp(torch.dot(anchors[i], others[i]) / tau)
            denom = pos
            for j in range(n):
                if j != i:
                    denom = denom + torch.exp(torch.dot(anchors[i], others[j]) / tau)
                    denom = denom + torch.exp(torch.dot(anchors[i], anchors[j]) / tau)
            direction = direction - torch.log(pos / denom)
        total = total + direction / n
    return total


def _direction(z, h_query, h_target, mask_q, mask_t, tau):
    """One direction: returns (loss, positive cosines, negative cosines, per-query neg lists)."""
    bsz, k, _ = z.shape
    losses, pos_sims, neg_sims, per_query = [], [], [], []
    for i in range(bsz):
        valid_targets = [j for j in range(k) if mask_t[i, j]]
        if not valid_targets:
            continue
        for n in range(k):
            if not mask_q[i, n]:
                continue
            match = max(valid_targets,
                        key=lambda j: torch.dot(unit(h_query[i, n]), unit(h_target[i, j])).item())
            zq = unit(z[i, n])
            pos = torch.dot(zq, unit(h_target[i, match]))
            negs = [torch.dot(zq, unit(h_target[p, q]))
                    for p in range(bsz) if p != i for q in range(k) if mask_t[p, q]]
            denom = torch.exp(pos / tau) + sum(torch.exp(s / tau) for s in negs)
            losses.append(-torch.log(torch.exp(pos / tau) / denom))
            pos_sims.append(pos.item())
            neg_sims.extend(s.item() for s in negs)
            if negs:
                per_query.append((min(s.item() for s in negs), max(s.item() for s in negs)))
    loss = sum(losses) / len(losses) if losses else torch.zeros(())
    return loss, pos_sims, neg_sims, per_query


def naive_region(z_a2b, z_b2a, h_a, h_b, mask_a, mask_b, tau):
    """Returns the loss and the statistics dict, averaged over the two directions."""
    out = {}
    results = [_direction(z_a2b, h_a, h_b, mask_a, mask_b, tau),
               _direction(z_b2a, h_b, h_a, mask_b, mask_a, tau)]
    out["loss"] = 0.5 * (results[0][0] + results[1][0])

    def mean(xs):
        return sum(xs) / len(xs) if xs else 0.0

    for key, fn in (("pos_sim_mean", lambda r: mean(r[1])),
                    ("pos_sim_min", lambda r: min(r[1]) if r[1] else 0.0),
                    ("pos_sim_max", lambda r: max(r[1]) if r[1] else 0.0),
                    ("neg_sim_mean", lambda r: mean(r[2])),
                    ("neg_sim_min", lambda r: mean([q[0] for q in r[3]])),
                    ("neg_sim_max", lambda r: mean([q[1] for q in r[3]]))):
        out[key] = 0.5 * (fn(results[0]) + fn(results[1]))
    assert not math.isnan(out["pos_sim_mean"])
    return out
