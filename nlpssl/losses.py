"""The loss core: five pure functions on tensors shared by every objective.

=====================  ==========================================
function               used by
=====================  ==========================================
``info_nce``           SimCSE (unsupervised, hard negatives), MoCo
``nt_xent``            SimCLR
``negative_cosine``    BYOL (the objective detaches the target)
``masked_mse``         MAE
``token_cross_entropy`` MLM, causal LM, classification
=====================  ==========================================

Losses take tensors, never models or config, and hold no state.
Shapes: B batch, D width, M extra negatives, N tokens/patches, P patch values, V vocab, W world.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from nlpssl.distributed import gather_with_grad, rank


def _at_least_float32(tensor: torch.Tensor) -> torch.Tensor:
    """Upcast half precision to float32 for a stable softmax; keep float64 (gradcheck, analysis) as it is."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def _full_precision(tensor: torch.Tensor):
    """Autocast off on ``tensor``'s device: cosine logits are normalised and multiplied in float32.

    In bf16 a cosine is off by up to ~4e-3, and ``1 / temperature`` (20 at 0.05)
    multiplies that error in the logits.
    """
    return torch.autocast(tensor.device.type, enabled=False)


def _unit_rows(tensor: torch.Tensor) -> torch.Tensor:
    """(N, D) rows scaled to unit length, in at least float32 (call under :func:`_full_precision`)."""
    return F.normalize(_at_least_float32(tensor), dim=-1)


def info_nce(
    query: torch.Tensor,
    keys: torch.Tensor,
    temperature: float,
    negatives: torch.Tensor | None = None,
    gather: bool = False,
    in_batch_negatives: bool = True,
) -> torch.Tensor:
    """InfoNCE with cosine logits; the positive of ``query[i]`` is ``keys[i]``.

    Oord et al. 2018 (CPC); the form used by SimCSE (Gao et al. 2021) and MoCo
    (He et al. 2020).

    Args:
        query: (B, D) queries; never gathered.
        keys: (B, D) positives; every other key is an in-batch negative.
        temperature: logits are ``cos / temperature``.
        negatives: (M, D) extra negatives appended as columns (SimCSE hard
            negatives, or a MoCo queue).
        gather: gather ``keys`` and ``negatives`` from every process (with
            autograd) so each query sees W*B keys. Leave False for a queue that
            is already global.
        in_batch_negatives: False scores each query against its own key and
            ``negatives`` only, the (B, 1 + M) logits of MoCo, whose negatives
            are the queue alone.

    Example::

        z1, z2 = encoder(batch), encoder(batch)     # two dropout views, (B, D)
        loss = info_nce(z1, z2, temperature=0.05, gather=True)
    """
    local_batch = query.shape[0]
    if not in_batch_negatives:
        return _own_key_and_negatives(query, keys, temperature, negatives, gather)
    if gather:
        keys = gather_with_grad(keys)  # (W*B, D)
        if negatives is not None:
            negatives = gather_with_grad(negatives)  # (W*M, D)
    candidates = keys if negatives is None else torch.cat([keys, negatives], dim=0)  # (C, D)
    with _full_precision(query):
        logits = _unit_rows(query) @ _unit_rows(candidates).T  # (B, C)
    offset = rank() * local_batch if gather else 0
    labels = torch.arange(local_batch, device=query.device) + offset  # (B,)
    return F.cross_entropy(logits / temperature, labels)


def _own_key_and_negatives(query, keys, temperature, negatives, gather) -> torch.Tensor:
    """InfoNCE whose candidates are each query's own key (column 0) and the shared negatives."""
    if negatives is None:
        raise ValueError("info_nce(in_batch_negatives=False) needs negatives (e.g. a MoCo queue)")
    if gather:
        negatives = gather_with_grad(negatives)  # (W*M, D)
    with _full_precision(query):
        query, keys, negatives = (_unit_rows(t) for t in (query, keys, negatives))
        positive = (query * keys).sum(dim=-1, keepdim=True)  # (B, 1)
        logits = torch.cat([positive, query @ negatives.T], dim=1)  # (B, 1 + M)
    labels = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)  # (B,)
    return F.cross_entropy(logits / temperature, labels)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float, gather: bool = False) -> torch.Tensor:
    """NT-Xent: the 2B x 2B contrastive loss of SimCLR with self-similarity masked.

    Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations". Identical embeddings give ``log(2B - 1)``.

    Args:
        z1, z2: (B, D) projections of two views; row i of each is a positive pair.
        temperature: logits are ``cos / temperature``.
        gather: compare our 2B rows against all 2*W*B rows of every process.

    Example::

        loss = nt_xent(head(backbone(view1)), head(backbone(view2)), temperature=0.5)
    """
    local_batch = z1.shape[0]
    with _full_precision(z1):
        queries = _unit_rows(torch.cat([z1, z2], dim=0))  # (2B, D)
        if gather:
            # Per process rows are [z1; z2]; gathered rows are [z1_r0; z2_r0; z1_r1; ...].
            keys = gather_with_grad(queries)  # (2*W*B, D)
            offset = 2 * local_batch * rank()
        else:
            keys, offset = queries, 0
        logits = queries @ keys.T / temperature  # (2B, 2WB)
    rows = torch.arange(2 * local_batch, device=z1.device)  # (2B,)
    self_columns = rows + offset
    logits[rows, self_columns] = float("-inf")
    partner = (rows + local_batch) % (2 * local_batch) + offset  # z1[i] <-> z2[i]
    return F.cross_entropy(logits, partner)


def negative_cosine(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative cosine similarity, ``-cos(p, z)``; BYOL / SimSiam.

    Grill et al. 2020 (BYOL), Chen & He 2021 (SimSiam). The caller detaches
    ``target`` (the teacher / stop-gradient branch).

    Args:
        prediction: (B, D) online predictions.
        target: (B, D) targets.

    Example::

        loss = negative_cosine(predictor(online(v1)), teacher(v2).detach())
    """
    return -F.cosine_similarity(_at_least_float32(prediction), _at_least_float32(target), dim=-1).mean()


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over masked positions only; MAE (He et al. 2022).

    Args:
        prediction: (B, N, P) reconstructed patches.
        target: (B, N, P) true patches (normalised per patch if the method wants).
        mask: (B, N), 1 where a patch was hidden and must be reconstructed.

    Example::

        loss = masked_mse(decoder(latent), patchify(images), mask)
    """
    per_patch = (_at_least_float32(prediction) - _at_least_float32(target)).pow(2).mean(dim=-1)  # (B, N)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1.0)


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean cross-entropy over positions whose label is not ``ignore_index``.

    Used by masked LM (labels only at masked positions), causal LM (labels
    already shifted by the objective) and classification (one label per row).
    Returns 0 (with a gradient path) when every label is ignored, never NaN.

    Args:
        logits: (..., V) scores; half precision is computed in float32 for stability.
        labels: (...) target ids, ``ignore_index`` where there is no target.

    Example::

        loss = token_cross_entropy(head(hidden[labels != -100]), labels[labels != -100])
    """
    flat_logits = _at_least_float32(logits.reshape(-1, logits.shape[-1]))  # (N, V)
    flat_labels = labels.reshape(-1)  # (N,)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=ignore_index, reduction="sum")
    count = (flat_labels != ignore_index).sum().clamp(min=1)
    return total / count
