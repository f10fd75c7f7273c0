"""Colourisation: predict the colour (Lab's a and b) of an image from its lightness (Zhang et al., ECCV 2016).

The regression variant, on :func:`nlpssl.losses.masked_mse` with every pixel a
target. Shapes: B images, S image side, F feature-map side, D backbone width.
"""

from __future__ import annotations

import torch
from kornia.color import rgb_to_lab
from torch import nn

from nlpssl.data.augment import BatchViews, denormalise, normalise
from nlpssl.losses import masked_mse
from nlpssl.models.vision import BackboneSpec
from nlpssl.objectives.vision_base import VisionObjective

AB_SCALE = 110.0  # Lab's a and b lie within about +-110: targets in [-1, 1]


def _upsampling_decoder(in_channels: int, upsamplings: int) -> nn.Sequential:
    """Feature map (B, D, F, F) -> (B, 2, F * 2^upsamplings, ...): conv-BN-ReLU, then x2 upsampling steps."""
    layers, channels = [], in_channels
    for step in range(upsamplings):
        out_channels = max(32, 128 >> step)
        layers += [nn.Conv2d(channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True)]
        layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        channels = out_channels
    layers.append(nn.Conv2d(channels, 2, 3, padding=1))
    return nn.Sequential(*layers)


class Colorization(VisionObjective):
    """The backbone sees a grey image; a small decoder regresses a and b per pixel.

    Needs a backbone with ``feature_map`` (:class:`~nlpssl.models.vision.ResNet18`,
    map side S/8) and RGB images.

    Example::

        objective = Colorization(ResNet18(), BackboneSpec(), BatchViews("mae", 32, num_views=1))
        objective(batch)["loss"]
    """

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, views: BatchViews) -> None:
        super().__init__(backbone, spec, views)
        self.decoder = _upsampling_decoder(backbone.feature_dim, upsamplings=3)

    def split_lab(self, view: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised RGB view -> (grey input in the backbone's normalisation (B, 3, S, S), ab target (B, 2, S, S))."""
        lab = rgb_to_lab(denormalise(view.float(), self.spec.mean, self.spec.std))  # (B, 3, S, S): L in [0, 100]
        grey = (lab[:, :1] / 100.0).expand(-1, 3, -1, -1)
        return normalise(grey, self.spec.mean, self.spec.std), lab[:, 1:] / AB_SCALE

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        (view,) = self.make_views(batch)  # (B, 3, S, S)
        grey, target = self.split_lab(view)
        predicted = self.decoder(self.backbone.feature_map(grey))  # (B, 2, S, S)
        per_pixel = predicted.flatten(2).transpose(1, 2), target.flatten(2).transpose(1, 2)  # 2 x (B, S*S, 2)
        every_pixel = torch.ones(per_pixel[0].shape[:2], device=view.device)  # (B, S*S)
        loss = masked_mse(*per_pixel, every_pixel)
        return {"loss": loss, **self.counts(batch)}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Features of the grey image, the only input the backbone ever trained on: uint8 (B, 3, S, S) -> (B, D)."""
        grey, _ = self.split_lab(self.as_float(images))
        return self.backbone(grey)
