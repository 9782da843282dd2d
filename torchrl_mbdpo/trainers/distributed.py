"""Data-parallel training with ``torch.distributed`` (``torchrun --nproc-per-node N mbdpo-train ...``).

Every process holds the whole model, trains on its own ``batch_size / N`` slices, and before each clip and
optimiser step the gradients are averaged over the processes, which is what ``DistributedDataParallel``
does. (DDP's wrapper assumes one forward and one backward per step; an MBDPO update has two backward passes
over different parameter groups, so the all-reduce is called explicitly, one flat bucket per optimiser.)
Gradients of the mean loss of the global batch are thus identical to those of one process on the whole
batch, so are the parameters, optimiser moments and Polyak targets; the running statistics (energy
normalisation, policy-loss scale) are taken from the main process after each update, as DDP's buffers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

__all__ = ["DistContext", "init_distributed", "make_gradient_averager", "broadcast_state", "average_gradients", "sync_running_stats"]


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: str = "cpu") -> DistContext:
    """A process group from torchrun's environment (gloo on CPU, nccl on CUDA); one process without it."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistContext()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if str(device).startswith("cuda") else "gloo")
    if str(device).startswith("cuda"):
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return DistContext(dist.get_rank(), dist.get_world_size())


def average_gradients(params: list[torch.Tensor], world_size: int) -> None:
    """Replace each parameter's gradient by its mean over the processes (one all-reduce for all of them;
    a missing gradient counts as zero)."""
    params = [p for p in params if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size
    for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
        p.grad = g


def make_gradient_averager(ctx: DistContext):
    """The ``grad_sync`` callback of :func:`~torchrl_mbdpo.objectives.update`, or None for one process."""
    if not ctx.enabled:
        return None
    return lambda params: average_gradients(params, ctx.world_size)


def broadcast_state(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy the main process's parameters and buffers to every process."""
    if ctx.enabled:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def sync_running_stats(ctx: DistContext, loss) -> None:
    """The main process's energy normalisation and policy-loss scale, on every process."""
    if ctx.enabled:
        for buffer in (loss.energy_norm.mean, loss.energy_norm.std, loss.scale.value):
            dist.broadcast(buffer, src=0)
