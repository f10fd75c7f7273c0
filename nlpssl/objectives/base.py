"""The Objective contract the training loop relies on; it never names a method."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class Objective(nn.Module):
    """A model plus the loss that trains it.

    ``forward(batch)`` returns a dict holding ``loss`` (a scalar tensor); other
    entries are logged. Two optional counts drive the loop's bookkeeping:
    ``num_tokens`` (for tokens/s; ``num_images`` for images/s where
    :attr:`throughput_unit` is "images") and ``num_targets`` (the weight of
    this batch's loss when averaging over an evaluation set).
    """

    #: report exp(eval loss) as perplexity (true for language-model objectives)
    eval_perplexity: bool = False
    #: what throughput counts: ``forward`` may return ``num_<unit>`` and the loop logs ``<unit>_per_s``
    throughput_unit: str = "tokens"

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_optimizer_step(self, progress: float) -> None:
        """Called once after each real optimizer step; ``progress`` runs from 0 to 1.

        EMA teachers and queues update here.
        """

    def export(self, directory: Path) -> None:  # pragma: no cover - abstract
        """Write the trained model as a folder other tools load (a HF checkpoint)."""
        raise NotImplementedError


class ModelObjective(Objective):
    """An objective around one Hugging Face model (``self.model``), exported as that model's checkpoint."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def export(self, directory: Path) -> None:
        self.model.save_pretrained(directory)
