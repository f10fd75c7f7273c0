"""Rotation prediction: which of 0, 90, 180, 270 degrees was an image turned by? (Gidaris et al., ICLR 2018).

Shapes: B images, C channels, S image side, D backbone width.
"""

from __future__ import annotations

import torch
from torch import nn

from nlpssl.data.augment import BatchViews
from nlpssl.losses import token_cross_entropy
from nlpssl.models.heads import MLPHead
from nlpssl.models.vision import BackboneSpec
from nlpssl.objectives.vision_base import VisionObjective

NUM_ROTATIONS = 4


def rotate_all(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image at each of the four rotations, as RotNet trains: (B, C, S, S) -> (4B, C, S, S), labels (4B,)."""
    rotated = torch.cat([torch.rot90(images, quarter, dims=(2, 3)) for quarter in range(NUM_ROTATIONS)])
    labels = torch.arange(NUM_ROTATIONS, device=images.device).repeat_interleave(images.shape[0])
    return rotated, labels


class RotationPrediction(VisionObjective):
    """4-way classification of the rotation, on :func:`nlpssl.losses.token_cross_entropy`.

    Example::

        objective = RotationPrediction(ResNet18(), BackboneSpec(), BatchViews("mae", 32, num_views=1))
        objective(batch)["loss"]  # log(4) at chance
    """

    card_tag = "rotation"

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, views: BatchViews) -> None:
        super().__init__(backbone, spec, views)
        self.classifier = MLPHead(backbone.feature_dim, backbone.feature_dim, NUM_ROTATIONS)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        (view,) = self.make_views(batch)  # (B, C, S, S)
        rotated, labels = rotate_all(view)  # (4B, C, S, S), (4B,)
        logits = self.classifier(self.backbone(rotated))  # (4B, 4)
        loss = token_cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(dim=-1) == labels).float().mean()
        return {"loss": loss, "pretext_accuracy": accuracy, **self.counts(batch)}
