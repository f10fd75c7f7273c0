"""Masked language modelling with sparse prediction.

The vocabulary projection (the largest matrix multiply of a small BERT) runs
only at the masked positions: same loss as the full head, about 1/7 the work.

Shapes: B batch, L length, D width, N masked positions, V vocab.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from nlpssl.data.collators import IGNORE_INDEX
from nlpssl.evaluation.token_accuracy import ContextFreeBaseline
from nlpssl.losses import token_cross_entropy
from nlpssl.models.text import mlm_head
from nlpssl.objectives.base import ModelObjective


class MaskedLM(ContextFreeBaseline, ModelObjective):
    """BERT-style masked LM on a ``*ForMaskedLM`` model (Devlin et al. 2019).

    Args:
        model: a Hugging Face masked-LM model whose ``base_model`` returns hidden
            states and whose output embeddings' owner head maps (N, D) -> (N, V).
        sparse_prediction: project only masked positions to the vocabulary.

    In evaluation mode it also counts top-1 and top-5 hits at the masked
    positions, and the context-free baseline's once :meth:`set_context_free_baseline` is called.

    Example::

        objective = MaskedLM(BertForMaskedLM(config))
        loss = objective(collate(examples))["loss"]
    """

    eval_perplexity = True
    card_pipeline_tag, card_tag, card_description = "fill-mask", "mlm", "masked language modelling"
    card_usage = 'from transformers import pipeline\n\nfill = pipeline("fill-mask", model="{path}")'

    def __init__(self, model: PreTrainedModel, sparse_prediction: bool = True) -> None:
        super().__init__(model)
        self.sparse_prediction = sparse_prediction

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        labels = batch["labels"]  # (B, L), IGNORE_INDEX where not masked
        targets = labels != IGNORE_INDEX
        if self.sparse_prediction:
            hidden = self.model.base_model(
                input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
            ).last_hidden_state  # (B, L, D)
            logits = mlm_head(self.model)(hidden[targets])  # (N, V)
        else:
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, L, V)
            logits = logits[targets]  # (N, V)
        loss = token_cross_entropy(logits, labels[targets])
        return {
            "loss": loss, "num_tokens": batch["attention_mask"].sum(), "num_targets": targets.sum(),
            **self._evaluation_counts(logits, labels[targets]),
        }

    def count_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked positions: the loss is their mean."""
        return (batch["labels"] != IGNORE_INDEX).sum()
