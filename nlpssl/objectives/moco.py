"""MoCo v2: a momentum key encoder and a queue of keys as negatives (He et al. 2020; Chen et al. 2020b).

Shapes: B images per process, W processes, K queue length, D backbone width, E key width.
"""

from __future__ import annotations

import torch
from torch import nn

from nlpssl.data.augment import BatchViews
from nlpssl.distributed import gather_with_grad, is_distributed, rank
from nlpssl.losses import info_nce
from nlpssl.models.heads import MLPHead
from nlpssl.models.momentum import EMATeacher, KeyQueue
from nlpssl.models.vision import BackboneSpec
from nlpssl.objectives.vision_base import VisionObjective


class MoCo(VisionObjective):
    """InfoNCE of each query against its key and a queue of K earlier keys.

    Keys come from an EMA copy of backbone + projector (momentum 0.99 for
    CIFAR-scale runs, 0.999 in the paper). The keys of a whole optimizer step,
    gathered from every process in rank order, enter the queue in
    :meth:`on_optimizer_step`: once per optimizer step, never per micro-batch,
    so every process holds the same queue. With several processes the key
    encoder sees a batch shuffled across processes (MoCo's shuffling BN), so
    BatchNorm cannot leak which key belongs to which query.

    Args:
        backbone, spec, views: as for SimCLR (views: the ``simclr`` preset, as MoCo v2).
        queue_size: K, a multiple of the global batch (checked by the recipe).
        projection_dim: E (128); temperature: 0.2 (MoCo v2); momentum: the key encoder's.
        symmetric: also use view 2 as queries against view 1's keys (twice the work, a better signal).

    Example::

        objective = MoCo(ResNet18(), BackboneSpec(), BatchViews("simclr", 32), queue_size=4096)
        objective(batch)["loss"].backward(); optimizer.step(); objective.on_optimizer_step(progress)
    """

    def __init__(
        self, backbone: nn.Module, spec: BackboneSpec, views: BatchViews, queue_size: int = 4096,
        projection_dim: int = 128, temperature: float = 0.2, momentum: float = 0.99, symmetric: bool = True,
    ) -> None:
        super().__init__(backbone, spec, views)
        self.projector = MLPHead(backbone.feature_dim, backbone.feature_dim, projection_dim)
        self.teacher = EMATeacher(nn.Sequential(backbone, self.projector))
        self.queue = KeyQueue(queue_size, projection_dim)
        self.temperature, self.momentum, self.symmetric = temperature, momentum, symmetric
        self.pending: list[torch.Tensor] = []  # gathered keys of this optimizer step's micro-batches

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        view1, view2 = self.make_views(batch)  # 2 x (B, C, S, S)
        query_views = torch.cat([view1, view2]) if self.symmetric else view1
        queries = self.projector(self.backbone(query_views))  # (2B or B, E)
        keys = self._keys(torch.cat([view2, view1]) if self.symmetric else view2, batch["seed"])  # (2B or B, E)
        negatives = self.queue.keys  # (K, E): keys of earlier steps only
        loss = info_nce(queries, keys, self.temperature, negatives=negatives, in_batch_negatives=False)
        if self.training:
            self.pending.append(gather_with_grad(keys[: view1.shape[0]]))  # (W*B, E): view-2 keys of every process
        return {"loss": loss, **self.counts(batch)}

    def _keys(self, views: torch.Tensor, seed: int) -> torch.Tensor:
        """Key projections of ``views`` (N, C, S, S) -> (N, E), without gradient."""
        if not (is_distributed() and self.training):  # evaluation: no collective (BatchNorm uses running statistics)
            return self.teacher(views)
        return _shuffled_forward(self.teacher, views, seed)

    def on_optimizer_step(self, progress: float) -> None:
        self.teacher.update(nn.Sequential(self.backbone, self.projector), self.momentum)
        for keys in self.pending:
            self.queue.enqueue(keys)
        self.pending.clear()


@torch.no_grad()
def _shuffled_forward(module: nn.Module, inputs: torch.Tensor, seed: int) -> torch.Tensor:
    """Run ``module`` on a batch shuffled across processes; return our rows in our order.

    MoCo's shuffling BN: each process normalises a random mix of every
    process's rows. The permutation is rank 0's (drawn from its batch seed and
    shared through the gather), so all processes agree on it.
    """
    everything = gather_with_grad(inputs)  # (W*N, C, S, S)
    total, local = everything.shape[0], inputs.shape[0]
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed)).to(inputs.device)  # (W*N,)
    order = gather_with_grad(order.unsqueeze(0))[0]  # rank 0's permutation, on every process
    mine = order[rank() * local : (rank() + 1) * local]  # (N,) the global rows this process encodes
    outputs = gather_with_grad(module(everything[mine]))  # (W*N, E), in shuffled order
    restored = torch.empty_like(outputs)
    restored[order] = outputs
    return restored[rank() * local : (rank() + 1) * local]  # (N, E)
