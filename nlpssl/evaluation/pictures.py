"""Pictures a person wants to see of a vision run: MAE's original / masked / reconstructed grid.

Shapes: B images, C channels, S image side, N patches, P values per patch.
"""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from nlpssl.data.augment import denormalise

ROWS = ("original", "masked", "reconstruction")


@torch.no_grad()
def mae_rows(objective, images: torch.Tensor, seed: int = 0) -> list[torch.Tensor]:
    """Original, masked and reconstructed images in [0, 1], each (B, C, S, S), for uint8 ``images``.

    The reconstruction shows the decoder's output in the hidden patches and the
    visible patches as they were. The decoder predicts per-patch normalised pixels
    (MAE's target), so the structure inside a hidden patch is the model's while
    its brightness and contrast are the true patch's mean and spread, as in the
    MAE paper's figures: the picture shows what was learned, not the patch mean.
    """
    mae, spec = objective.mae, objective.spec
    view = objective.as_float(images)  # (B, C, S, S)
    noise = objective.noise(view.shape[0], seed, view.device)
    predicted, patches, mask = objective.reconstruct(view, noise)  # (B, N, P), (B, N, P), (B, N)
    hidden = mask.unsqueeze(-1).bool()  # (B, N, 1)
    mean, spread = patches.mean(dim=-1, keepdim=True), (patches.var(dim=-1, keepdim=True) + 1e-6).sqrt()  # (B, N, 1)
    filled = torch.where(hidden, predicted * spread + mean, patches)
    blanked = torch.where(hidden, torch.zeros_like(patches), patches)

    def to_unit(normalised: torch.Tensor) -> torch.Tensor:
        return denormalise(normalised, spec.mean, spec.std).cpu()

    return [to_unit(view), to_unit(mae.unpatchify(blanked)), to_unit(mae.unpatchify(filled))]


def save_mae_grid(objective, images, path: str | Path, count: int = 8) -> Path:
    """Save a 3 x ``count`` grid (original / masked / reconstruction) of the first images of an ImageSet.

    Example::

        save_mae_grid(objective, splits["test"], "outputs/vision/mae/reconstructions.png")
    """
    count = min(count, len(images))
    device = next(objective.parameters()).device
    batch = images.__getitems__(list(range(count)))["images"].to(device)
    rows = mae_rows(objective, batch)
    figure = Figure(figsize=(1.3 * count, 1.4 * len(ROWS)), layout="constrained")
    FigureCanvasAgg(figure)
    for row, (title, pictures) in enumerate(zip(ROWS, rows)):
        for column in range(count):
            axes = figure.add_subplot(len(ROWS), count, row * count + column + 1)
            picture = pictures[column].permute(1, 2, 0).squeeze(-1).numpy()
            axes.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if column == 0:
                axes.set_ylabel(title, fontsize=9)
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path
