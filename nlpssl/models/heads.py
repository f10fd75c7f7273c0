"""Poolers that turn token states into sentence vectors, and the MLP heads put on top.

Shapes: B batch, L length, D encoder width, H hidden width of an MLP head, E output width.

- :func:`pool` reduces ``(B, L, D)`` token states to ``(B, D)`` ("cls" or mask-aware "mean").
- :class:`TanhPooler` is BERT's pooler (Linear + Tanh), the MLP SimCSE puts on [CLS].
- :class:`MLPHead` is the Linear-BN-ReLU-Linear projection / prediction head of SimCLR and BYOL.
- :class:`SentencePooler` bundles SimCSE's three pooler choices, with different
  behaviour at training time (:meth:`SentencePooler.forward`) and at test time
  (:meth:`SentencePooler.embed`, and :attr:`SentencePooler.export_pooling` for a saved encoder).

Torch only: the encoder is any module whose output has ``last_hidden_state``.
Reading the pooling a saved sentence-transformers folder declares is
:func:`nlpssl.models.sentence_folder.folder_pooling`.
"""

from __future__ import annotations

import torch
from torch import nn

from nlpssl.errors import UserError

POOL_METHODS = ("cls", "mean")
SIMCSE_POOLERS = ("cls", "cls_before_pooler", "mean")


def pool(last_hidden: torch.Tensor, attention_mask: torch.Tensor, method: str) -> torch.Tensor:
    """Reduce token states to one vector per sentence.

    Args:
        last_hidden: (B, L, D) the encoder's last hidden states.
        attention_mask: (B, L) 1 for real tokens, 0 for padding.
        method: "cls" takes position 0; "mean" averages the real tokens only,
            so a sentence's vector does not depend on how much padding its batch has.

    Returns:
        (B, D) sentence vectors.

    Example::

        out = model(**batch)
        vectors = pool(out.last_hidden_state, batch["attention_mask"], "mean")  # (B, D)
    """
    if method == "cls":
        return last_hidden[:, 0]  # (B, D)
    if method == "mean":
        weights = attention_mask.unsqueeze(-1).to(last_hidden.dtype)  # (B, L, 1)
        summed = (last_hidden * weights).sum(dim=1)  # (B, D)
        # clamp: an all-padding row gives a zero vector instead of NaN
        return summed / weights.sum(dim=1).clamp(min=1e-9)  # (B, D)
    raise UserError(f"unknown pooling method {method!r}; choose one of {', '.join(POOL_METHODS)}")


class TanhPooler(nn.Module):
    """Linear + Tanh on a sentence vector: BERT's pooler, the MLP SimCSE trains on [CLS].

    Gao et al. 2021 (SimCSE), following Devlin et al. 2019 (BERT's ``pooler``).

    Args:
        in_dim: D, the width of the incoming vectors.
        out_dim: E, the output width; defaults to ``in_dim`` (as in BERT and SimCSE).

    Example::

        head = TanhPooler(768)
        z = head(pool(hidden, mask, "cls"))  # (B, 768)
    """

    def __init__(self, in_dim: int, out_dim: int | None = None):
        super().__init__()
        self.dense = nn.Linear(in_dim, out_dim or in_dim)
        self.activation = nn.Tanh()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(x))  # (B, D) -> (B, E)


class MLPHead(nn.Module):
    """Linear - BatchNorm - ReLU - Linear: the projection head of SimCLR, the projector/predictor of BYOL.

    Chen et al. 2020 (SimCLR), Grill et al. 2020 (BYOL). BatchNorm needs more
    than one example per batch in training mode.

    Args:
        in_dim: D, the width of the incoming vectors.
        hidden_dim: H, the width of the hidden layer (BYOL: 4096, SimCLR: = D).
        out_dim: E, the output width (BYOL: 256, SimCLR: 128).
        batch_norm: False gives Linear - ReLU - Linear (SimCLR v1 without BN).
        output_norm: BatchNorm on the output too (SimSiam's projector against collapse; SimCLR v2's head).

    Example::

        projector = MLPHead(2048, hidden_dim=4096, out_dim=256)
        z = projector(features)  # (B, 2048) -> (B, 256)
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, batch_norm: bool = True, output_norm: bool = False):
        super().__init__()
        norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=not batch_norm),  # BN's shift makes the bias redundant
            *norm,
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=not output_norm),
            *([nn.BatchNorm1d(out_dim)] if output_norm else []),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)  # (B, D) -> (B, E)


class SentencePooler(nn.Module):
    """SimCSE's sentence embedding: a pooling method plus an optional MLP, train vs test.

    Gao et al. 2021 (SimCSE), section 3 and appendix:

    ==================  =====================  ===================
    method              training embedding     test embedding
    ==================  =====================  ===================
    "cls"               MLP([CLS])             MLP([CLS])
    "cls_before_pooler" MLP([CLS])             [CLS]
    "mean"              mean of real tokens    mean of real tokens
    ==================  =====================  ===================

    Args:
        method: one of "cls", "cls_before_pooler", "mean".
        hidden_size: D, the encoder width; needed for the two "cls" methods (their MLP).

    Example::

        pooler = SentencePooler("cls_before_pooler", hidden_size=model.config.hidden_size)
        z = pooler(model(**batch).last_hidden_state, batch["attention_mask"])  # (B, D), trains the MLP
        pooler.export_pooling  # "cls": how to evaluate the saved encoder alone
    """

    def __init__(self, method: str, hidden_size: int | None = None):
        super().__init__()
        if method not in SIMCSE_POOLERS:
            raise UserError(f"unknown SimCSE pooler {method!r}; choose one of {', '.join(SIMCSE_POOLERS)}")
        self.method = method
        self.mlp: TanhPooler | None = None
        if method != "mean":
            if hidden_size is None:
                raise ValueError(f"SentencePooler({method!r}) needs hidden_size for its MLP")
            self.mlp = TanhPooler(hidden_size)

    def forward(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Training-time embedding: (B, L, D) states and (B, L) mask -> (B, D)."""
        vectors = pool(last_hidden, attention_mask, "mean" if self.method == "mean" else "cls")  # (B, D)
        return self.mlp(vectors) if self.mlp is not None else vectors

    def embed(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Test-time embedding: (B, L, D) states and (B, L) mask -> (B, D); drops the MLP for "cls_before_pooler"."""
        if self.method == "cls_before_pooler":
            return pool(last_hidden, attention_mask, "cls")
        return self.forward(last_hidden, attention_mask)

    @property
    def export_pooling(self) -> str:
        """How to pool a saved encoder so it matches :meth:`embed`.

        "pooler" (the model's own ``pooler_output``) for "cls": call
        :meth:`copy_mlp_into` first so BERT's pooler holds the trained MLP.
        """
        return {"cls": "pooler", "cls_before_pooler": "cls", "mean": "mean"}[self.method]

    def copy_mlp_into(self, encoder: nn.Module) -> None:
        """Copy the trained MLP into a BERT-like encoder's ``pooler.dense``, so the saved folder keeps it.

        BERT's pooler is the same Linear + Tanh on [CLS], so after this the
        encoder's ``pooler_output`` equals :meth:`embed` for method "cls".
        """
        if self.mlp is None:
            raise ValueError(f"SentencePooler({self.method!r}) has no MLP to copy")
        dense = getattr(getattr(encoder, "pooler", None), "dense", None)
        if not isinstance(dense, nn.Linear) or dense.weight.shape != self.mlp.dense.weight.shape:
            raise UserError(
                f"{type(encoder).__name__} has no pooler.dense of shape {tuple(self.mlp.dense.weight.shape)} "
                f"to keep the MLP in; train with pooler 'cls_before_pooler' or 'mean' instead"
            )
        dense.load_state_dict(self.mlp.dense.state_dict())
