"""Fine-tuning for sequence classification (cross-entropy) and regression (squared error).

Both losses come from the shared core: :func:`~nlpssl.losses.token_cross_entropy`
with one label per row, and :func:`~nlpssl.losses.masked_mse` with every row counted.

Shapes: B batch, L length, C classes (1 for regression).
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from nlpssl.losses import masked_mse, token_cross_entropy
from nlpssl.objectives.base import ModelObjective

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class SequenceClassification(ModelObjective):
    """A ``*ForSequenceClassification`` model and its loss (Devlin et al. 2019, section 4.1).

    Regression when the model has one output (``problem_type="regression"``), as
    GLUE's STS-B; else single-label classification.

    Example::

        objective = SequenceClassification(build_classifier(path, tokenizer, ["neg", "pos"]))
        loss = objective(ClassificationCollator(tokenizer)(rows))["loss"]
    """

    card_pipeline_tag, card_tag, card_description = "text-classification", "classification", "sequence classification fine-tuning"
    card_usage = (
        'from transformers import AutoModelForSequenceClassification, AutoTokenizer\n\n'
        'model = AutoModelForSequenceClassification.from_pretrained("{path}")\ntokenizer = AutoTokenizer.from_pretrained("{path}")'
    )

    def __init__(self, model: PreTrainedModel) -> None:
        super().__init__(model)
        self.regression = model.config.num_labels == 1

    def logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, C) scores of a batch (no loss); a (B, 1) score for regression."""
        return self.model(**{k: batch[k] for k in MODEL_INPUTS if k in batch}).logits

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits = self.logits(batch)  # (B, C)
        labels = batch["labels"]  # (B,)
        if self.regression:
            loss = masked_mse(logits, labels.to(logits.dtype)[:, None], torch.ones_like(labels, dtype=logits.dtype))
        else:
            loss = token_cross_entropy(logits, labels)
        return {"loss": loss, "num_tokens": batch["attention_mask"].sum(), "num_targets": self.count_targets(batch)}

    def count_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One label per row."""
        return torch.tensor(batch["labels"].shape[0], device=batch["labels"].device)
