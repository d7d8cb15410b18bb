"""Global NT-Xent loss between the two views of every video (docs/spec.md section 3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from constcl import dist


def global_nt_xent(
    emb_a: torch.Tensor, emb_b: torch.Tensor, temperature: float = 0.1
) -> dict[str, torch.Tensor]:
    """SimCLR-style NT-Xent over the global batch, summed over the two directions.

    Args:
        emb_a: (B, D) embeddings of view a; row i of emb_a and emb_b comes from video i.
        emb_b: (B, D) embeddings of view b.
            They are L2-normalised here. Under torch.distributed, the negatives come from every
            process (gathered with gradient); B is the per-process batch.
        temperature: tau_g.

    For anchor a_i the positive is b_i and the negatives are all other videos' a and b embeddings
    in the global batch (2 B_global - 2). Loss = mean_i l_i^a + mean_i l_i^b, as in the reference.

    Returns:
        ``loss``; ``accuracy`` (share of rows whose a->b argmax is the positive); ``entropy``
        (mean entropy of softmax over the a->b logits). Statistics are over this process's rows.
    """
    if emb_a.shape != emb_b.shape or emb_a.dim() != 2:
        raise ValueError(f"emb_a and emb_b must both be (B, D); got {tuple(emb_a.shape)} "
                         f"and {tuple(emb_b.shape)}")
    a = F.normalize(emb_a.float(), dim=1)
    b = F.normalize(emb_b.float(), dim=1)
    a_all, b_all = dist.gather_with_grad(a), dist.gather_with_grad(b)
    batch = a.shape[0]
    labels = torch.arange(batch, device=a.device) + dist.rank() * batch
    # = F.one_hot(labels, 2B).bool(), without one_hot's range check (a host read on the CPU)
    self_mask = labels[:, None] == torch.arange(a_all.shape[0], device=a.device)[None, :]

    logits_ab = a @ b_all.T / temperature
    logits_ba = b @ a_all.T / temperature
    logits_aa = (a @ a_all.T / temperature).masked_fill(self_mask, float("-inf"))
    logits_bb = (b @ b_all.T / temperature).masked_fill(self_mask, float("-inf"))
    loss_a = F.cross_entropy(torch.cat([logits_ab, logits_aa], dim=1), labels)
    loss_b = F.cross_entropy(torch.cat([logits_ba, logits_bb], dim=1), labels)

    with torch.no_grad():
        accuracy = (logits_ab.argmax(dim=1) == labels).float().mean()
        prob = logits_ab.softmax(dim=1)
        entropy = -(prob * torch.log(prob + 1e-8)).sum(dim=1).mean()
    return {"loss": loss_a + loss_b, "accuracy": accuracy, "entropy": entropy}
