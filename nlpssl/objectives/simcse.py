"""SimCSE: contrastive sentence embeddings (Gao, Yao & Chen, EMNLP 2021).

Unsupervised: each sentence is encoded twice; the two dropout views are a
positive pair and every other sentence in the (gathered) batch a negative.
Supervised: (anchor, positive[, hard negative]) rows; hard negatives join the
candidates as extra columns. Both are :func:`nlpssl.losses.info_nce`.

Shapes: B sentences per view, V views, L length, D width.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import PreTrainedModel

from nlpssl.losses import info_nce
from nlpssl.models.heads import SentencePooler
from nlpssl.models.sentence_folder import save_sentence_folder
from nlpssl.errors import UserError
from nlpssl.objectives.base import Objective, sub_state_dict


class SimCSE(Objective):
    """InfoNCE over pooled sentence embeddings; views come stacked view-major in one batch.

    Args:
        encoder: a Hugging Face encoder (``AutoModel``) returning ``last_hidden_state``.
        pooler: :class:`SentencePooler` ("cls", "cls_before_pooler" or "mean").
        num_views: 2 (unsupervised, or anchor + positive) or 3 (with hard negatives).
        temperature: 0.05 in the paper.
        gather: in training, use the keys of every process as negatives (needs equal batch sizes).

    Example::

        objective = SimCSE(AutoModel.from_pretrained(path), SentencePooler("mean"), num_views=2)
        loss = objective(SentenceViewsCollator(tokenizer, ["text"], repeat=2)(rows))["loss"]
    """

    card_pipeline_tag, card_library, card_tag = "sentence-similarity", "sentence-transformers", "simcse"
    card_description = "SimCSE (contrastive sentence embeddings, InfoNCE)"
    card_usage = 'from sentence_transformers import SentenceTransformer\n\nmodel = SentenceTransformer("{path}")'

    def __init__(
        self, encoder: PreTrainedModel, pooler: SentencePooler, num_views: int = 2,
        temperature: float = 0.05, gather: bool = True, max_seq_length: int = 32,
    ) -> None:
        super().__init__()
        if num_views not in (2, 3):
            raise ValueError("SimCSE takes 2 views (anchor, positive) or 3 (with a hard negative)")
        self.encoder, self.pooler = encoder, pooler
        self.num_views, self.temperature, self.gather = num_views, temperature, gather
        self.max_seq_length = max_seq_length

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        hidden = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state  # (V*B, L, D)
        embeddings = self.pooler(hidden, batch["attention_mask"])  # (V*B, D)
        views = embeddings.chunk(self.num_views)  # V x (B, D)
        negatives = views[2] if self.num_views == 3 else None
        # Evaluation scores each process's batch on its own: no collective, the same loss on any number of processes.
        gather = self.gather and self.training
        loss = info_nce(views[0], views[1], self.temperature, negatives=negatives, gather=gather)
        return {"loss": loss, "num_tokens": batch["attention_mask"].sum(), "num_targets": self.count_targets(batch)}

    def count_targets(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One target (the positive) per sentence of the first view: the loss is a mean over B queries."""
        rows = batch["input_ids"]  # (V*B, L)
        return torch.tensor(rows.shape[0] // self.num_views, device=rows.device)

    def embed(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Test-time embedding (B, L, D) -> (B, D), as the exported folder computes it."""
        return self.pooler.embed(hidden, attention_mask)

    def export(self, directory: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Save a folder that AutoModel and SentenceTransformer load, with the trained pooling.

        ``state_dict``: this objective's weights gathered from every process (see :meth:`Objective.export`).
        """
        state_dict = self.state_dict() if state_dict is None else state_dict
        keeps_mlp = self.pooler.method == "cls"
        pooling = "mean" if self.pooler.method == "mean" else "cls"
        encoder_state = sub_state_dict(state_dict, "encoder")
        dense = sub_state_dict(state_dict, "pooler.mlp.dense") if keeps_mlp else None  # {"weight", "bias"}
        if keeps_mlp and getattr(self.encoder, "pooler", None) is not None:
            _keep_mlp_in_pooler(self.encoder, encoder_state, dense)  # AutoModel's pooler_output is then the embedding
        save_sentence_folder(self.encoder, directory, pooling, dense, self.max_seq_length, state_dict=encoder_state)


def _keep_mlp_in_pooler(encoder, encoder_state: dict, dense: dict) -> None:
    """Put the trained MLP into a BERT-like encoder's ``pooler.dense`` entries (BERT's pooler is the same Linear + Tanh)."""
    current = encoder_state.get("pooler.dense.weight")
    if current is None or current.shape != dense["weight"].shape:
        raise UserError(
            f"{type(encoder).__name__} has no pooler.dense of shape {tuple(dense['weight'].shape)} "
            f"to keep the MLP in; train with pooler 'cls_before_pooler' or 'mean' instead"
        )
    encoder_state |= {f"pooler.dense.{name}": tensor for name, tensor in dense.items()}
