"""Masked language modelling with sparse prediction.

The vocabulary projection (the largest matrix multiply of a small BERT) runs
only at the masked positions: same loss as the full head, about 1/7 the work.

Shapes: B batch, L length, D width, N masked positions, V vocab.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from nlpssl.data.collators import IGNORE_INDEX
from nlpssl.losses import token_cross_entropy
from nlpssl.objectives.base import ModelObjective


class MaskedLM(ModelObjective):
    """BERT-style masked LM on a ``*ForMaskedLM`` model (Devlin et al. 2019).

    Args:
        model: a Hugging Face masked-LM model whose ``base_model`` returns hidden
            states and whose output embeddings' owner head maps (N, D) -> (N, V).
        sparse_prediction: project only masked positions to the vocabulary.

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
            logits = self._head(hidden[targets])  # (N, V)
            loss = token_cross_entropy(logits, labels[targets])
        else:
            logits = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, L, V)
            loss = token_cross_entropy(logits, labels)
        return {"loss": loss, "num_tokens": batch["attention_mask"].sum(), "num_targets": targets.sum()}

    def count_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Masked positions: the loss is their mean."""
        return (batch["labels"] != IGNORE_INDEX).sum()

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        # BertForMaskedLM keeps its head in `cls`; other families name it differently,
        # so fall back to the full model's head module found next to the base model.
        head = getattr(self.model, "cls", None) or getattr(self.model, "lm_head", None)
        if head is None:
            raise TypeError(f"{type(self.model).__name__} has no known MLM head; use sparse_prediction=False")
        return head(hidden)
