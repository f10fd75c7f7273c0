"""Momentum teachers and key queues: the state that BYOL and MoCo keep between steps.

Shapes: B local batch, W world size, K queue length, D key width.

Both are modules, so checkpoints hold them and resume restores them exactly.
Objectives update them in ``on_optimizer_step``, once per optimizer step.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def cosine_momentum(progress: float, base: float = 0.996, final: float = 1.0) -> float:
    """BYOL's teacher momentum: ``base`` at the start, rising on a cosine to ``final`` at the end.

    Grill et al. 2020, eq. (after 3): ``1 - (1 - base) * (cos(pi * k / K) + 1) / 2``.

    Example::

        cosine_momentum(0.0)  # 0.996
        cosine_momentum(1.0)  # 1.0
    """
    progress = min(max(progress, 0.0), 1.0)
    return final - (final - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


class EMATeacher(nn.Module):
    """A frozen copy of a student whose weights follow it by exponential moving average.

    BYOL's target network and MoCo's key encoder. Parameters follow
    ``teacher = momentum * teacher + (1 - momentum) * student``; buffers
    (BatchNorm statistics) are copied from the student.

    Example::

        teacher = EMATeacher(nn.Sequential(backbone, projector))
        targets = teacher(view)            # no gradient
        teacher.update(student, 0.99)      # after the optimizer step
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.module = copy.deepcopy(student)
        self.module.requires_grad_(False)

    def forward(self, *args, **kwargs):
        with torch.no_grad():
            return self.module(*args, **kwargs)

    @torch.no_grad()
    def update(self, student: nn.Module, momentum: float) -> None:
        teacher_params = list(self.module.parameters())
        student_params = [p.detach() for p in student.parameters()]
        torch._foreach_lerp_(teacher_params, student_params, 1.0 - momentum)
        for teacher_buffer, student_buffer in zip(self.module.buffers(), student.buffers()):
            teacher_buffer.copy_(student_buffer)


class KeyQueue(nn.Module):
    """A first-in-first-out queue of K keys: MoCo's dictionary of negatives (He et al. 2020).

    Starts with random unit vectors (as MoCo does). :meth:`enqueue` takes keys
    already gathered from every process, in rank order, so every process holds
    the same queue.

    Example::

        queue = KeyQueue(4096, 128)
        loss = info_nce(q, k, 0.2, negatives=queue.keys, in_batch_negatives=False)
        queue.enqueue(gathered_keys)       # once per optimizer step
    """

    def __init__(self, size: int, dim: int, seed: int = 0) -> None:
        super().__init__()
        start = torch.randn(size, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("queue", nn.functional.normalize(start, dim=-1))  # (K, D)
        self.register_buffer("position", torch.zeros((), dtype=torch.long))

    @property
    def keys(self) -> torch.Tensor:
        """(K, D) the current negatives, detached."""
        return self.queue.detach()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Overwrite the oldest rows with ``keys`` (N, D), wrapping around the end."""
        size = self.queue.shape[0]
        rows = (self.position + torch.arange(keys.shape[0], device=self.queue.device)) % size  # (N,)
        self.queue[rows] = nn.functional.normalize(keys.detach().to(self.queue.dtype), dim=-1)
        self.position.copy_((self.position + keys.shape[0]) % size)
