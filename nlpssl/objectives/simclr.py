"""SimCLR: two augmented views, a projection MLP and NT-Xent (Chen et al., ICML 2020).

Shapes: B images per process, D backbone width, E projection width.
"""

from __future__ import annotations

import torch
from torch import nn

from nlpssl.data.augment import BatchViews
from nlpssl.losses import nt_xent
from nlpssl.models.heads import MLPHead
from nlpssl.models.vision import BackboneSpec
from nlpssl.objectives.vision_base import VisionObjective


class SimCLR(VisionObjective):
    """NT-Xent between the projections of two views of each image.

    Args:
        backbone: (B, C, S, S) -> (B, D), with ``feature_dim``.
        spec: the backbone's spec (normalisation, export).
        views: a two-view :class:`BatchViews` (preset ``simclr``).
        projection_dim: E (128 in the paper); the hidden layer is D wide, and the output has
            BatchNorm too (SimCLR v2's head, as lightly's ``SimCLRProjectionHead``).
        temperature: 0.5 for CIFAR-10 in the paper.
        gather: in training, negatives from every process (2*W*B - 2 per positive pair).

    Each view goes through the backbone and the head on its own, so BatchNorm
    normalises it with its own statistics, as the reference code and lightly's
    examples do. On CIFAR-10 (``benchmarks/vision_knn.py``'s training and kNN, 400
    steps, seeds 0 and 1) this and the output BatchNorm together raised kNN accuracy
    from 37.11 and 37.63 (both views in one batch, no output BatchNorm) to 38.81 and 39.27.

    Example::

        objective = SimCLR(ResNet18(), BackboneSpec(), BatchViews("simclr", 32))
        loss = objective(ImageCollator()(images.__getitems__(range(64))))["loss"]
    """

    def __init__(
        self, backbone: nn.Module, spec: BackboneSpec, views: BatchViews,
        projection_dim: int = 128, temperature: float = 0.5, gather: bool = True,
    ) -> None:
        super().__init__(backbone, spec, views)
        self.projector = MLPHead(backbone.feature_dim, backbone.feature_dim, projection_dim, output_norm=True)
        self.temperature, self.gather = temperature, gather

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        view1, view2 = self.make_views(batch)  # 2 x (B, C, S, S)
        z1, z2 = (self.projector(self.backbone(view)) for view in (view1, view2))  # 2 x (B, E), BatchNorm per view
        loss = nt_xent(z1, z2, self.temperature, gather=self.gather and self.training)  # evaluation: no collective
        return {"loss": loss, **self.counts(batch)}
