"""Jigsaw puzzles: which permutation shuffled the 3x3 tiles of an image? (Noroozi & Favaro, ECCV 2016).

Shapes: B images, C channels, S image side, T tile side, G tiles (9), P permutations, D backbone width.
"""

from __future__ import annotations

import functools
import itertools

import numpy as np
import torch
from torch import nn

from nlpssl.data.augment import BatchViews
from nlpssl.losses import token_cross_entropy
from nlpssl.models.heads import MLPHead
from nlpssl.models.vision import BackboneSpec
from nlpssl.objectives.vision_base import VisionObjective

GRID = 3


@functools.lru_cache(maxsize=8)
def hamming_permutations(count: int, tiles: int = GRID * GRID) -> torch.Tensor:
    """A fixed set of ``count`` permutations of ``tiles`` chosen greedily for maximal minimum Hamming distance.

    Noroozi & Favaro's Algorithm 1, with the minimum instead of the mean
    distance: start from the identity, then repeatedly add the permutation
    farthest (in minimum Hamming distance) from those chosen; ties go to the
    first in lexicographic order, so the set is the same everywhere. (P, G) long.

    Example::

        hamming_permutations(100)[1]   # a permutation differing from the identity in all 9 places
    """
    candidates = np.array(list(itertools.permutations(range(tiles))), dtype=np.int8)  # (G!, G)
    chosen = [0]
    nearest = (candidates != candidates[0]).sum(axis=1)  # (G!,) distance to the closest chosen permutation
    for _ in range(count - 1):
        pick = int(nearest.argmax())
        chosen.append(pick)
        nearest = np.minimum(nearest, (candidates != candidates[pick]).sum(axis=1))
    return torch.from_numpy(candidates[chosen].astype(np.int64))


def shuffle_tiles(images: torch.Tensor, permutations: torch.Tensor, choice: torch.Tensor) -> torch.Tensor:
    """Cut each image into a 3x3 grid and reorder the tiles: (B, C, S, S) -> (B, G, C, T, T).

    Tile ``g`` of the output is tile ``permutations[choice[b], g]`` of the image.
    """
    batch, channels, side, _ = images.shape
    tile = side // GRID
    grid = images[:, :, : GRID * tile, : GRID * tile]
    tiles = grid.unfold(2, tile, tile).unfold(3, tile, tile)  # (B, C, 3, 3, T, T)
    tiles = tiles.permute(0, 2, 3, 1, 4, 5).reshape(batch, GRID * GRID, channels, tile, tile)  # (B, G, C, T, T)
    order = permutations[choice]  # (B, G)
    return tiles[torch.arange(batch, device=images.device).unsqueeze(1), order]


class Jigsaw(VisionObjective):
    """Classify the permutation of shuffled tiles, each tile through the shared backbone.

    Args:
        backbone, spec, views: as for SimCLR; views usually ``mae`` (crop, flip).
        num_permutations: P, the size of the max-Hamming permutation set (1000 in the paper).

    Example::

        objective = Jigsaw(ResNet18(), BackboneSpec(), BatchViews("mae", 32, num_views=1), num_permutations=100)
        objective(batch)["loss"]  # log(P) at chance
    """

    def __init__(self, backbone: nn.Module, spec: BackboneSpec, views: BatchViews, num_permutations: int = 100) -> None:
        super().__init__(backbone, spec, views)
        self.register_buffer("permutations", hamming_permutations(num_permutations), persistent=False)  # (P, G)
        tiles_width = GRID * GRID * backbone.feature_dim
        self.classifier = MLPHead(tiles_width, 512, num_permutations)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        (view,) = self.make_views(batch)  # (B, C, S, S)
        generator = torch.Generator().manual_seed(batch["seed"])
        labels = torch.randint(len(self.permutations), (view.shape[0],), generator=generator).to(view.device)  # (B,)
        tiles = shuffle_tiles(view, self.permutations, labels)  # (B, G, C, T, T)
        features = self.backbone(tiles.flatten(0, 1))  # (B*G, D)
        logits = self.classifier(features.reshape(view.shape[0], -1))  # (B, P)
        loss = token_cross_entropy(logits, labels)
        accuracy = (logits.detach().argmax(dim=-1) == labels).float().mean()
        return {"loss": loss, "pretext_accuracy": accuracy, **self.counts(batch)}
