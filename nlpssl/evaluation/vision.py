"""Frozen-feature evaluation of image backbones: kNN during training, kNN and linear probe at the end.

The kNN protocol vision SSL libraries report: cosine similarity, k=200
neighbours, temperature 0.1, similarity-weighted vote (Wu et al. 2018).
Shapes: N images, C channels, S image side, D feature width.
"""

from __future__ import annotations

from typing import Callable

import torch

from nlpssl.evaluation.evaluator import Evaluator
from nlpssl.evaluation.probe import extract_features, knn_accuracy, linear_probe

Encode = Callable[[torch.Tensor], torch.Tensor]  # uint8 (B, C, S, S) on the model's device -> (B, D)


def image_batches(images, batch_size: int, device: torch.device):
    """Batches of an ImageSet in order, on ``device``: dicts with "images" and "labels"."""
    for start in range(0, len(images), batch_size):
        rows = images.__getitems__(list(range(start, min(start + batch_size, len(images)))))
        yield {key: value.to(device) for key, value in rows.items()}


def image_features(encode: Encode, images, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Features (N, D) and labels (N,) of a labelled ImageSet, on CPU."""
    return extract_features(lambda batch: encode(batch["images"]), image_batches(images, batch_size, device))


def frozen_evaluation(
    encode: Encode, bank, test, device: torch.device, batch_size: int = 256,
    k: int = 200, temperature: float = 0.1, probe_epochs: int = 0,
) -> dict[str, float]:
    """kNN accuracy (and the linear probe's with ``probe_epochs`` > 0) of test images against a labelled bank, x100.

    Example::

        frozen_evaluation(objective.features, splits["train"], splits["test"], torch.device("cpu"), probe_epochs=100)
    """
    bank_x, bank_y = image_features(encode, bank, batch_size, device)
    test_x, test_y = image_features(encode, test, batch_size, device)
    results = {"knn_accuracy": 100.0 * knn_accuracy(bank_x, bank_y, test_x, test_y, k=k, temperature=temperature)}
    if probe_epochs > 0:
        probe = linear_probe(bank_x, bank_y, test_x, test_y, epochs=probe_epochs, batch_size=1024)
        results["linear_probe_accuracy"] = 100.0 * probe["accuracy"]
    return results


class KNNMonitor(Evaluator):
    """Evaluator for the training loop: kNN accuracy of the objective's frozen features.

    Args:
        bank: labelled ImageSet whose features vote (the training split).
        test: labelled ImageSet to classify.
        k, temperature: the vote (200 and 0.1 by default, as lightly and solo-learn report).

    Example::

        train(objective, images, ImageCollator(), cfg, evaluators=[KNNMonitor(splits["train"], splits["test"])])
    """

    def __init__(self, bank, test, k: int = 200, temperature: float = 0.1, batch_size: int = 256) -> None:
        self.bank, self.test, self.k, self.temperature, self.batch_size = bank, test, k, temperature, batch_size

    def __call__(self, objective) -> dict[str, float]:
        device = next(objective.parameters()).device
        was_training = objective.training
        objective.eval()
        try:
            return frozen_evaluation(objective.features, self.bank, self.test, device, self.batch_size, self.k, self.temperature)
        finally:
            objective.train(was_training)
