"""Token-prediction accuracy of language models, next to a context-free baseline.

A language model that has not yet learned to use context predicts the same
frequent words everywhere (the "unigram plateau" small BERTs sit on early in
training): its loss falls, but its top guess is ``the`` or ``,`` whatever the
sentence says. Accuracy against the best context-free predictor (always guess
the most frequent tokens of the training data) shows when a run leaves that
plateau: a model that uses context beats it; a unigram model only matches it.

Shapes: N target positions, V vocabulary, K top-k.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

TOP_K = (1, 5)  # accuracies reported: top-1 and top-5


def most_frequent_tokens(rows: Iterable[Sequence[int]], vocab_size: int, exclude: Iterable[int] = (), k: int = max(TOP_K)) -> list[int]:
    """The ``k`` ids most frequent in ``rows`` (token-id sequences), most frequent first, ``exclude`` left out.

    The context-free baseline: the prediction a model that ignores its input
    should make at every position. ``exclude``: ids never a target (special tokens).
    A row may be a whole batch of ids flattened: for a large ``datasets.Dataset``
    pass batches (``nlpssl.recipes.pretrain.context_free_guesses`` does), since
    iterating its column row by row costs seconds per ten thousand rows.

    Example::

        most_frequent_tokens([[4, 4, 2, 7], [7, 4, 1]], vocab_size=9, exclude=[1], k=2)   # [4, 7]
    """
    counts = np.zeros(vocab_size, dtype=np.int64)
    for row in rows:
        counts += np.bincount(np.asarray(row, dtype=np.int64), minlength=vocab_size)[:vocab_size]
    counts[list(exclude)] = -1
    return np.argsort(-counts, kind="stable")[:k].tolist()


def hit_counts(logits: torch.Tensor, targets: torch.Tensor, baseline_ids: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Correct top-k predictions of the model and of the context-free baseline (0-dim counts, on the device).

    Args:
        logits: (N, V) scores at the target positions.
        targets: (N,) the true ids.
        baseline_ids: (K,) the baseline's guesses, most frequent first; None: model counts only.

    Returns ``{"top1_accuracy": hits, "top5_accuracy": hits}`` plus
    ``"baseline_top1_accuracy"`` ... when ``baseline_ids`` is given; divided by N they are accuracies.

    Example::

        hit_counts(torch.tensor([[0.1, 2.0, 0.3]]), torch.tensor([1]), None)   # {"top1_accuracy": tensor(1), ...}
    """
    k_max = min(max(TOP_K), logits.shape[-1])
    ranked = logits.topk(k_max, dim=-1).indices  # (N, k_max)
    correct = ranked == targets[:, None]  # (N, k_max)
    counts = {f"top{k}_accuracy": correct[:, :k].sum() for k in TOP_K}
    if baseline_ids is not None:
        guessed = baseline_ids[None, :] == targets[:, None]  # (N, K)
        counts |= {f"baseline_top{k}_accuracy": guessed[:, :k].sum() for k in TOP_K}
    return counts


class ContextFreeBaseline:
    """Mixin of language-model objectives: accuracy counts in evaluation mode, against the context-free baseline.

    The objective calls :meth:`_evaluation_counts` at its target positions; the
    training loop sums the counts over the evaluation batches and every process,
    and logs ``eval_top1_accuracy``, ``eval_baseline_top1_accuracy`` and the
    others (each divided by the number of targets). Training steps skip the work.
    """

    baseline_ids: torch.Tensor | None = None

    @property
    def eval_count_names(self) -> tuple[str, ...]:
        """The counts :meth:`_evaluation_counts` returns: the model's top-k hits, then the baseline's."""
        names = tuple(f"top{k}_accuracy" for k in TOP_K)
        return names + tuple(f"baseline_{name}" for name in names) * (self.baseline_ids is not None)

    def set_context_free_baseline(self, token_ids: Sequence[int]) -> None:
        """The baseline's guesses (:func:`most_frequent_tokens`), most frequent first."""
        self.baseline_ids = torch.tensor(list(token_ids), dtype=torch.long)

    def _evaluation_counts(self, logits: torch.Tensor, targets: torch.Tensor) -> dict:
        """``{"eval_counts": {...}}`` in evaluation mode (nothing while training). logits (N, V), targets (N,)."""
        if self.training:
            return {}
        baseline = self.baseline_ids.to(targets.device) if self.baseline_ids is not None else None
        return {"eval_counts": hit_counts(logits.detach(), targets, baseline)}
