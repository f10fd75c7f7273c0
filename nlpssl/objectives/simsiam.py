"""SimSiam: a predictor and a stop-gradient, no negatives and no teacher (Chen & He, CVPR 2021).

Shapes: B images per process, D backbone width, E projection width, H predictor hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from nlpssl.data.augment import BatchViews
from nlpssl.losses import negative_cosine
from nlpssl.models.heads import MLPHead
from nlpssl.models.vision import BackboneSpec
from nlpssl.objectives.vision_base import VisionObjective


class SimSiam(VisionObjective):
    """Symmetric negative cosine between one view's prediction and the other's detached projection.

    Args:
        backbone, spec, views: as for :class:`~nlpssl.objectives.simclr.SimCLR`.
        projection_dim: E (2048 in the paper; smaller at CIFAR scale).
        predictor_hidden_dim: H, the predictor's bottleneck (E / 4 in the paper).

    Example::

        objective = SimSiam(ResNet18(), BackboneSpec(), BatchViews("simclr", 32))
        objective(batch)["loss"]  # in [-1, 1]; -1 is perfect agreement
    """

    def __init__(
        self, backbone: nn.Module, spec: BackboneSpec, views: BatchViews,
        projection_dim: int = 512, predictor_hidden_dim: int = 128,
    ) -> None:
        super().__init__(backbone, spec, views)
        self.projector = MLPHead(backbone.feature_dim, projection_dim, projection_dim, output_norm=True)  # BN on the output, as the paper
        self.predictor = MLPHead(projection_dim, predictor_hidden_dim, projection_dim)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        view1, view2 = self.make_views(batch)  # 2 x (B, C, S, S)
        z1, z2 = self.projector(self.backbone(torch.cat([view1, view2]))).chunk(2)  # 2 x (B, E)
        p1, p2 = self.predictor(torch.cat([z1, z2])).chunk(2)  # 2 x (B, E)
        loss = 0.5 * (negative_cosine(p1, z2.detach()) + negative_cosine(p2, z1.detach()))
        return {"loss": loss, **self.counts(batch)}
