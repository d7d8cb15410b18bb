"""Distributed helpers (torchrun only). Every function works without a process group.

``init_from_env()`` reads RANK / LOCAL_RANK / WORLD_SIZE as set by torchrun and picks NCCL when
CUDA is available, gloo otherwise (so the tests run on CPU). Two gathers whose names cannot be
confused: ``gather_no_grad`` (statistics, masks) and ``gather_with_grad`` (contrastive negatives,
so that N processes with shards get the gradient of one process with the whole batch).
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def init_from_env(backend: str | None = None) -> bool:
    """Join the process group described by torchrun's environment; False when not under torchrun.

    Returns True when a group was (or already is) initialised.
    """
    if is_initialized():
        return True
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ:
        return False
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend=backend)
    return True


def shutdown(wait: bool = True) -> None:
    """Leave the process group (waiting for every process first when ``wait``), if there is one.

    Without it, a gloo / NCCL group is torn down by the interpreter's exit, which can abort
    ("terminate called without an active exception") while another rank still talks to it.
    """
    if is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all processes along dim 0 (no gradient flows back)."""
    if world_size() == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0; backward sums every process's gradient and keeps this shard's."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        ctx.rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = rank() * ctx.rows
        return grad[start:start + ctx.rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all processes along dim 0; gradients flow back to every shard.

    Every process must pass the same shape. Backward: the gradients that all processes computed
    for the gathered tensor are summed (all_reduce, works on gloo and NCCL) and each process
    keeps its own rows; DDP's gradient averaging then makes N processes equal to one process with
    the whole batch.
    """
    if world_size() == 1:
        return tensor
    return _GatherWithGrad.apply(tensor)


def all_reduce_sum_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of ``tensor`` over processes (a copy; the input is left alone)."""
    if world_size() == 1:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out
