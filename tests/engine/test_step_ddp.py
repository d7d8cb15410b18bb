"""The non-finite guard under DDP (gloo, 2 processes): a NaN loss on one process makes every
process skip the step, with no flag all-reduce, because the NaN reaches every process through
DDP's gradient all-reduce; the runs end as a single process that never ran that step. The NaN
loss here has finite gradients (a NaN constant added), so only the step's NaN scale of the
backward pass carries it to the other process."""

import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from constcl.engine.optim import build_optimizer
from constcl.engine.step import TrainStep
from tests.engine.test_step import Small, _batch

WORLD = 2


def _micro(step, rank, offset=0.0):
    """Step ``step``'s micro-batch of process ``rank`` (5 rows)."""
    return _batch(10 * step + rank, offset=offset)


def _full(step):
    """Both processes' rows as one batch (what one process with the whole batch sees)."""
    parts = [_micro(step, r) for r in range(WORLD)]
    return {**parts[0], "x": torch.cat([p["x"] for p in parts])}


def worker(rank, store, out_dir):
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    plain = Small()
    model = nn.parallel.DistributedDataParallel(plain)
    opt = build_optimizer(plain, "sgd", lr=0.5, momentum=0.9, weight_decay=0.01)
    step = TrainStep(model, opt, "fp32", "cpu")
    oks = []
    for s in range(3):
        offset = float("nan") if (s == 1 and rank == 1) else 0.0
        oks.append(bool(step([_micro(s, rank, offset)], lr=0.5 + 0.1 * s).ok))
    state = {"oks": torch.tensor(oks),
             "params": [p.detach().clone() for p in plain.parameters()],
             "buffers": [opt.state[p]["momentum_buffer"].clone() for p in plain.parameters()]}
    torch.save(state, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.barrier()
    dist.destroy_process_group()


def test_nan_on_one_process_skips_the_step_on_every_process(tmp_path):
    mp.spawn(worker, args=(str(tmp_path / "store"), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for r in ranks:
        assert r["oks"].tolist() == [True, False, True]
    for a, b in zip(ranks[0]["params"] + ranks[0]["buffers"],
                    ranks[1]["params"] + ranks[1]["buffers"], strict=True):
        assert torch.equal(a, b)
    ref = Small()
    opt = build_optimizer(ref, "sgd", lr=0.5, momentum=0.9, weight_decay=0.01)
    step = TrainStep(ref, opt, "fp32", "cpu")
    step([_full(0)], lr=0.5)
    step([_full(2)], lr=0.7)
    for got, want in zip(ranks[0]["params"], ref.parameters(), strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    for got, p in zip(ranks[0]["buffers"], ref.parameters(), strict=True):
        torch.testing.assert_close(got, opt.state[p]["momentum_buffer"], rtol=1e-5, atol=1e-6)
