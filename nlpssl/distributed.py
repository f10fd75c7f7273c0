"""Process-group helpers and the one differentiable all-gather.

Only keys are gathered: each process keeps its own queries and labels them
``arange(B) + rank * B``. ``accelerator.gather`` has no autograd, so losses that
need negatives from every process use :func:`gather_with_grad`.

Shapes: B local batch, W world size, D width.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def cpu_only() -> bool:
    """True when no accelerator of any kind (CUDA, MPS, XPU, ...) is present.

    Accelerate is then told to run (several) processes on CPU with gloo; with an
    accelerator, it picks the device itself.
    """
    return not torch.accelerator.is_available()


def is_distributed() -> bool:
    """True when a process group with more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def gather_objects(value: object) -> list:
    """Every process's ``value`` (picklable), in rank order; ``[value]`` when not distributed.

    Example::

        everyone = gather_objects(sorted(steps_on_disk))   # W lists
    """
    if not is_distributed():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every process's gradient for our slice."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:  # (B, ...) -> (W*B, ...)
        ctx.local_rows = tensor.shape[0]
        parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, tensor.contiguous())
        return torch.cat(parts, dim=0)

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor) -> torch.Tensor:  # (W*B, ...) -> (B, ...)
        # Every process's loss depends on our rows, so our gradient is the sum
        # of all processes' gradients for them.
        grad = grad_output.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.local_rows
        return grad[start : start + ctx.local_rows]


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` (B, ...) from all processes into (W*B, ...), keeping autograd.

    Every process must pass the same B. Without a process group it returns the
    input unchanged.

    Example::

        keys = gather_with_grad(keys)            # (W*B, D)
        labels = torch.arange(B) + rank() * B    # positives of our queries
    """
    if not is_distributed():
        return tensor
    return _GatherWithGrad.apply(tensor)
