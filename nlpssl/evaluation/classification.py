"""Scoring a sequence classifier: predictions over a split, `evaluate` metrics, files other tools read.

Shapes: N rows, C classes (1 for regression).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Callable, Sequence

import datasets
import torch
import torch.nn.functional as F

from nlpssl.atomic import atomic_file
from nlpssl.data.classification import token_lengths
from nlpssl.evaluation.evaluator import Evaluator
from nlpssl.evaluation.metrics import compute_metrics

CLASS_SCORES = ("accuracy", "f1_macro", "matthews_correlation")
REGRESSION_SCORES = ("pearson", "spearman")


def score_names(label_names: Sequence[str] | None) -> list[str]:
    """The scores reported for a task: binary F1 joins for two classes; regression gets correlations."""
    if label_names is None:
        return list(REGRESSION_SCORES)
    return ["accuracy", "f1", *CLASS_SCORES[1:]] if len(label_names) == 2 else list(CLASS_SCORES)


@torch.no_grad()
def predict_logits(objective, rows: datasets.Dataset, collator: Callable, batch_size: int = 128) -> torch.Tensor:
    """(N, C) logits of ``objective.logits`` over ``rows``, in row order.

    Rows are batched by length (little padding) and put back in order. The
    objective is put in eval mode for the pass and returned to its former mode.
    ``rows`` must not be empty.
    """
    inputs = rows.select_columns([c for c in ("input_ids", "token_type_ids") if c in rows.column_names])
    order = torch.argsort(torch.tensor(token_lengths(inputs)), stable=True).tolist()
    device = next(objective.parameters()).device
    was_training = objective.training
    objective.eval()
    chunks = []
    for start in range(0, len(order), batch_size):
        batch = collator(inputs.__getitems__(order[start : start + batch_size]))
        chunks.append(objective.logits({k: v.to(device) for k, v in batch.items()}).float().cpu())  # (b, C)
    objective.train(was_training)
    by_length = torch.cat(chunks)  # (N, C), row order[j] at j
    return by_length[torch.argsort(torch.tensor(order))]


def score_logits(logits: torch.Tensor, labels: Sequence, label_names: Sequence[str] | None) -> dict[str, float]:
    """Loss and the task's `evaluate` scores of (N, C) ``logits`` against (N,) gold ``labels``."""
    if label_names is None:
        gold = torch.tensor(labels, dtype=torch.float)  # (N,)
        scores = compute_metrics(score_names(None), predictions=logits[:, 0], references=gold)
        return {"loss": F.mse_loss(logits[:, 0], gold).item()} | scores
    gold = torch.tensor(labels, dtype=torch.long)  # (N,)
    scores = compute_metrics(score_names(label_names), predictions=logits.argmax(-1), references=gold)
    return {"loss": F.cross_entropy(logits, gold).item()} | scores


class ValidationScores(Evaluator):
    """Evaluator for the training loop: scores on a labelled split, keys prefixed (``val_accuracy``).

    Example::

        scores = ValidationScores(splits.validation, ClassificationCollator(tokenizer), ["neg", "pos"])
        train(objective, splits.train, collate, cfg, evaluators=[KeepBest(scores, "val_accuracy", out / "best")])
    """

    def __init__(
        self, rows: datasets.Dataset, collator: Callable, label_names: Sequence[str] | None,
        prefix: str = "val_", batch_size: int = 128,
    ) -> None:
        self.rows, self.collator, self.label_names = rows, collator, label_names
        self.prefix, self.batch_size = prefix, batch_size
        self.labels = rows["labels"]

    def __call__(self, objective) -> dict[str, float]:
        logits = predict_logits(objective, self.rows, self.collator, self.batch_size)
        return {self.prefix + k: v for k, v in score_logits(logits, self.labels, self.label_names).items()}


def write_predictions(path: Path, rows: datasets.Dataset, logits: torch.Tensor, label_names: Sequence[str] | None) -> Path:
    """One CSV line per row: ``text`` [, ``text_pair``], ``gold``, ``predicted``, ``probability``.

    ``probability`` is the softmax probability of the predicted label; for
    regression ``predicted`` is the score and there is no probability column.
    """
    texts = [rows[c] for c in ("text", "text_pair") if c in rows.column_names]
    header = ["text", "text_pair"][: len(texts)]
    if label_names is None:
        header += ["gold", "predicted"]
        lines = zip(*texts, rows["labels"], (f"{v:.4f}" for v in logits[:, 0].tolist()))
    else:
        probability, predicted = F.softmax(logits, dim=-1).max(dim=-1)  # (N,), (N,)
        gold = (label_names[i] for i in rows["labels"])
        names = (label_names[i] for i in predicted.tolist())
        header += ["gold", "predicted", "probability"]
        lines = zip(*texts, gold, names, (f"{p:.4f}" for p in probability.tolist()))
    with atomic_file(path, "w", newline="", encoding="utf-8") as handle:  # renamed into place when complete
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(lines)
    return path
