"""BYOL: an online network predicts an EMA teacher's projection (Grill et al., NeurIPS 2020).

Shapes: B images per process, D backbone width, E projection width, H hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from nlpssl.data.augment import BatchViews
from nlpssl.losses import negative_cosine
from nlpssl.models.heads import MLPHead
from nlpssl.models.momentum import EMATeacher, cosine_momentum
from nlpssl.models.vision import BackboneSpec
from nlpssl.objectives.vision_base import VisionObjective


class BYOL(VisionObjective):
    """Symmetric negative cosine between online predictions and the teacher's projections.

    The teacher (backbone + projector) follows the online network by EMA with
    momentum ``cosine_momentum(progress)`` rising from ``base_momentum`` (0.996) to 1, updated in
    :meth:`on_optimizer_step`: once per optimizer step, whatever the accumulation.

    Args:
        backbone, spec, views: as for SimCLR; ``views`` usually the asymmetric ``byol`` preset.
        projection_dim: E (256 in the paper); hidden_dim: H (4096 in the paper).
        base_momentum: the teacher's momentum at step 0.

    Example::

        objective = BYOL(ResNet18(), BackboneSpec(), BatchViews("byol", 32))
        objective(batch)["loss"].backward(); optimizer.step(); objective.on_optimizer_step(progress)
    """

    def __init__(
        self, backbone: nn.Module, spec: BackboneSpec, views: BatchViews,
        projection_dim: int = 256, hidden_dim: int = 1024, base_momentum: float = 0.996,
    ) -> None:
        super().__init__(backbone, spec, views)
        self.projector = MLPHead(backbone.feature_dim, hidden_dim, projection_dim)
        self.predictor = MLPHead(projection_dim, hidden_dim, projection_dim)
        self.teacher = EMATeacher(nn.Sequential(backbone, self.projector))
        self.base_momentum = base_momentum

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        view1, view2 = self.make_views(batch)  # 2 x (B, C, S, S)
        both = torch.cat([view1, view2])  # (2B, C, S, S)
        p1, p2 = self.predictor(self.projector(self.backbone(both))).chunk(2)  # 2 x (B, E)
        t1, t2 = self.teacher(both).chunk(2)  # 2 x (B, E), no gradient
        loss = negative_cosine(p1, t2) + negative_cosine(p2, t1)
        return {"loss": loss, **self.counts(batch)}

    def on_optimizer_step(self, progress: float) -> None:
        # A pure function of the step (no state to resume): after step k of K, progress = (k + 1) / K.
        self.teacher.update(nn.Sequential(self.backbone, self.projector), cosine_momentum(progress, self.base_momentum))
