"""What every image objective shares: the uint8 batch, seeded views, features for evaluation, export.

A vision batch is ``{"images": (B, C, S, S) uint8, "seed": int[, "labels": (B,)]}``
(:class:`ImageCollator`); the objective augments it on its own device with
:class:`~nlpssl.data.augment.BatchViews`, seeded by ``batch["seed"]``, which the
collator draws from the loop's per-(step, process) generator: resume stays exact.

Shapes: B batch, C channels, S image side, D feature width.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from nlpssl.data.augment import BatchViews, to_float
from nlpssl.models.vision import BackboneSpec, save_backbone
from nlpssl.objectives.base import Objective, sub_state_dict

SEED_RANGE = 2**62


class ImageCollator:
    """Rows of an :class:`~nlpssl.data.images.ImageSet` -> a uint8 batch and the seed of its augmentations.

    Example::

        collate = ImageCollator()
        batch = collate(images.__getitems__([0, 1, 2]), generator=torch.Generator().manual_seed(0))
    """

    def __call__(self, rows: dict, generator: torch.Generator | None = None) -> dict:
        generator = generator or torch.Generator().manual_seed(0)
        seed = int(torch.randint(0, SEED_RANGE, (1,), generator=generator))
        return {**rows, "seed": seed}


class VisionObjective(Objective):
    """Base of the image objectives: ``backbone`` (B, C, S, S) -> (B, D), ``views``, export.

    Subclasses implement ``forward(batch)``; :meth:`features` is what kNN and
    the linear probe see, :meth:`export` writes the backbone other tools load.
    """

    throughput_unit = "images"
    card_pipeline_tag, card_library = "image-feature-extraction", "nlpssl"
    card_usage = 'from nlpssl.models.vision import load_backbone\n\nbackbone, spec = load_backbone("{path}")'

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, views: BatchViews | None) -> None:
        super().__init__()
        self.backbone, self.spec, self.views = backbone, spec, views

    def make_views(self, batch: dict) -> list[torch.Tensor]:
        """The augmented float views of ``batch["images"]`` for this micro-step, each (B, C, S, S)."""
        with torch.no_grad():
            return self.views(batch["images"], batch["seed"])

    def as_float(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, S, S) -> the backbone's normalised float input, no augmentation."""
        return to_float(images, self.spec.mean, self.spec.std)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Frozen-feature view for evaluation: uint8 (B, C, S, S) -> (B, D)."""
        return self.backbone(self.as_float(images))

    def counts(self, batch: dict) -> dict:
        """What ``forward`` reports for the images/s throughput, on the batch's device."""
        return {"num_images": self.count_targets(batch)}

    def count_targets(self, batch: dict) -> torch.Tensor:
        """One per image: every image objective's loss is a mean over its images."""
        images = batch["images"]  # (B, C, S, S)
        return torch.tensor(images.shape[0], device=images.device)

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        save_backbone(self.backbone, self.spec, directory, state_dict=sub_state_dict(state_dict, "backbone"))
