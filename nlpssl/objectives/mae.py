"""MAE: mask 75% of the patches, encode the rest, reconstruct the hidden ones (He et al., CVPR 2022).

The model is ``transformers``' ``ViTMAEForPreTraining`` (patchify, per-sample
random masking by argsort of noise, lightweight decoder); the noise comes from
the batch seed, so masks replay exactly on resume, and the loss is
:func:`nlpssl.losses.masked_mse` on per-patch normalised pixels (``model.norm_pix_loss``,
the paper's default) or on the pixels themselves.

Shapes: B images, C channels, S image side, N patches, P values per patch (patch_size^2 * C), D width.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nlpssl.data.augment import BatchViews
from nlpssl.losses import masked_mse
from nlpssl.models.vision import BackboneSpec, ViTFeatures, save_backbone
from nlpssl.objectives.base import sub_state_dict
from nlpssl.objectives.vision_base import VisionObjective


def normalise_patches(patches: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Per-patch zero mean, unit variance: MAE's ``norm_pix_loss`` target. (B, N, P) -> (B, N, P)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + eps).sqrt()


class MAE(VisionObjective):
    """Masked autoencoding of image patches with a ``transformers`` ViT-MAE.

    Args:
        mae: a ``ViTMAEForPreTraining`` (see :func:`nlpssl.models.vision.build_mae`).
        spec: its spec (``mask_ratio``, normalisation, export).
        views: a one-view :class:`BatchViews` (preset ``mae``: crop and flip).

    Example::

        objective = MAE(build_mae(spec), spec, BatchViews("mae", 32, num_views=1))
        out = objective(batch)      # out["loss"]; reconstruct() gives images for a picture
    """

    def __init__(self, mae: nn.Module, spec: BackboneSpec, views: BatchViews) -> None:
        super().__init__(None, spec, views)
        self.mae = mae

    @property
    def num_patches(self) -> int:
        return (self.spec.image_size // self.spec.patch_size) ** 2

    def noise(self, batch_size: int, seed: int, device: torch.device) -> torch.Tensor:
        """(B, N) uniform noise whose argsort is each image's patch shuffle."""
        generator = torch.Generator().manual_seed(seed)
        return torch.rand(batch_size, self.num_patches, generator=generator).to(device)

    def reconstruct(self, images: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted patches (B, N, P), true patches (B, N, P) and the mask (B, N), 1 where hidden."""
        encoded = self.mae.vit(pixel_values=images, noise=noise)
        predicted = self.mae.decoder(encoded.last_hidden_state, encoded.ids_restore).logits  # (B, N, P)
        return predicted, self.mae.patchify(images), encoded.mask

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        (view,) = self.make_views(batch)  # (B, C, S, S)
        noise = self.noise(view.shape[0], batch["seed"], view.device)
        predicted, patches, mask = self.reconstruct(view, noise)
        target = normalise_patches(patches) if self.spec.norm_pix_loss else patches
        loss = masked_mse(predicted, target, mask)
        return {"loss": loss, **self.counts(batch)}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return ViTFeatures(self.mae.vit)(self.as_float(images))  # (B, D), every patch seen

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        save_backbone(None, self.spec, directory, mae=self.mae, state_dict=sub_state_dict(state_dict, "mae"))
