"""Causal (next-token) language modelling, GPT-style.

The shift lives here and only here: the hidden state at position t predicts
the label at t + 1. Collators hand over unshifted labels (-100 at padding).
The vocabulary projection runs only where a target exists (no last position,
no padding), which skips a (B, L, V) copy the full head would make.

Shapes: B batch, L length, D width, N target positions, V vocab.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from nlpssl.data.collators import IGNORE_INDEX
from nlpssl.evaluation.token_accuracy import ContextFreeBaseline
from nlpssl.losses import token_cross_entropy
from nlpssl.objectives.base import ModelObjective


def shift_for_next_token(states: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The causal shift: the state at position t is paired with the label at t + 1.

    Args:
        states: (B, L, ...) hidden states or logits.
        labels: (B, L) unshifted labels, -100 where there is no target.

    Returns ``states[:, :-1]`` (B, L-1, ...) and ``labels[:, 1:]`` (B, L-1).

    Example::

        hidden, targets = shift_for_next_token(hidden, batch["labels"])
        loss = token_cross_entropy(head(hidden), targets)
    """
    return states[:, :-1], next_token_labels(labels)


def next_token_labels(labels: torch.Tensor) -> torch.Tensor:
    """The targets of positions 0 .. L-2: (B, L) unshifted labels -> (B, L-1)."""
    return labels[:, 1:]


class CausalLM(ContextFreeBaseline, ModelObjective):
    """Next-token prediction on a ``*ForCausalLM`` model (Radford et al. 2018, GPT).

    Args:
        model: a Hugging Face causal-LM model (e.g. ``GPT2LMHeadModel``).
        sparse_prediction: apply the output embeddings (the vocabulary head) only
            at positions with a target; set False for models whose logits are more than
            ``lm_head(hidden)`` (logit scaling or soft-capping).

    In evaluation mode it also counts top-1 and top-5 next-token hits, and the
    unigram baseline's once :meth:`set_context_free_baseline` is called.

    Example::

        objective = CausalLM(build_clm_model(tokenizer, TransformerDims(), block_size=128))
        loss = objective(CausalLMCollator(tokenizer)(blocks[:8]))["loss"]
    """

    eval_perplexity = True
    card_pipeline_tag, card_tag, card_description = "text-generation", "clm", "causal language modelling"
    card_usage = 'from transformers import pipeline\n\ngenerate = pipeline("text-generation", model="{path}")'

    def __init__(self, model: PreTrainedModel, sparse_prediction: bool = True) -> None:
        super().__init__(model)
        self.sparse_prediction = sparse_prediction

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
        if self.sparse_prediction:
            hidden = self.model.base_model(**inputs).last_hidden_state  # (B, L, D)
            hidden, targets = shift_for_next_token(hidden, batch["labels"])  # (B, L-1, D), (B, L-1)
            has_target = targets != IGNORE_INDEX  # (B, L-1)
            logits = self.model.get_output_embeddings()(hidden[has_target])  # (N, V)
        else:
            logits, targets = shift_for_next_token(self.model(**inputs).logits, batch["labels"])  # (B, L-1, V)
            has_target = targets != IGNORE_INDEX
            logits = logits[has_target]  # (N, V)
        loss = token_cross_entropy(logits, targets[has_target])
        return {
            "loss": loss, "num_tokens": batch["attention_mask"].sum(), "num_targets": has_target.sum(),
            **self._evaluation_counts(logits, targets[has_target]),
        }

    def count_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Positions with a next token to predict: the loss is their mean."""
        return (next_token_labels(batch["labels"]) != IGNORE_INDEX).sum()
