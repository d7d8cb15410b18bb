"""World size 2 with B per process equals world size 1 with 2B: loss and gradients (gloo)."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from constcl.losses import global_nt_xent, region_info_nce

BATCH, K, C, WORLD = 3, 5, 8, 2


def make_inputs():
    gen = torch.Generator().manual_seed(0)
    emb = [torch.randn(WORLD * BATCH, C, generator=gen) for _ in range(2)]
    region = [torch.randn(WORLD * BATCH, K, C, generator=gen) for _ in range(4)]
    masks = [torch.rand(WORLD * BATCH, K, generator=gen) < 0.6 for _ in range(2)]
    masks[0][0] = False  # rank 0 has fewer valid queries than rank 1
    return emb, region, masks


def losses_and_grads(emb, region, masks):
    emb = [t.clone().requires_grad_(True) for t in emb]
    region = [t.clone().requires_grad_(True) for t in region]
    g = global_nt_xent(*emb, temperature=0.1)["loss"]
    r = region_info_nce(*region, *masks, temperature=0.2)["loss"]
    grads_g = torch.autograd.grad(g, emb)
    grads_r = torch.autograd.grad(r, region)
    return g.detach(), r.detach(), grads_g, grads_r


def worker(rank, store_path, out_dir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank,
                            world_size=WORLD)
    emb, region, masks = make_inputs()
    shard = slice(rank * BATCH, (rank + 1) * BATCH)
    result = losses_and_grads([t[shard] for t in emb], [t[shard] for t in region],
                              [m[shard] for m in masks])
    torch.save(result, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_two_process_gather_equals_single_process(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    full_g, full_r, full_grads_g, full_grads_r = losses_and_grads(*make_inputs())
    # DDP averages over processes: the mean of the per-process losses (and of the gradients)
    # must be the single-process value.
    torch.testing.assert_close(sum(r[0] for r in ranks) / WORLD, full_g)
    torch.testing.assert_close(sum(r[1] for r in ranks) / WORLD, full_r)
    for which, full in ((2, full_grads_g), (3, full_grads_r)):
        for i, full_grad in enumerate(full):
            sharded = torch.cat([ranks[r][which][i] for r in range(WORLD)]) / WORLD
            torch.testing.assert_close(sharded, full_grad, rtol=1e-4, atol=1e-6)
