"""Our loss core against sentence-transformers' MultipleNegativesRankingLoss on the same embeddings.

MNRL with ``scale=20`` is SimCSE's InfoNCE at ``temperature=0.05`` (scale =
1 / temperature): cosine logits, the positive of anchor i is positive i, every
other positive (and every hard negative) a candidate. Its
``compute_loss_from_embeddings`` is the loss after the encoder, so both sides
get the very same tensors; the model it is built with is never called.

Shapes: B batch, D width.
"""

from __future__ import annotations

import math

import pytest
import torch

from nlpssl.losses import info_nce

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")

B, D = 32, 48
TOLERANCES = {torch.float64: {"rtol": 1e-12, "atol": 1e-12}, torch.float32: {"rtol": 1e-5, "atol": 1e-6}}


def sentence_like(dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """Anchors, positives, hard negatives (B, D) each: anisotropic (a shared direction), positives near their anchors."""
    generator = torch.Generator().manual_seed(seed)
    common, anchors, noise, negatives = (torch.randn(n, D, generator=generator, dtype=torch.float64) for n in (1, B, B, B))
    anchors = common + 0.5 * anchors  # (B, D): every cosine is high, as with real sentence embeddings
    positives = anchors + 0.4 * noise  # (B, D)
    negatives = common + 0.5 * negatives  # (B, D)
    return [t.to(dtype).requires_grad_() for t in (anchors, positives, negatives)]


def loss_and_grads(loss_fn, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    leaves = [t.detach().clone().requires_grad_() for t in tensors]
    loss = loss_fn(leaves)
    return loss.detach(), torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("hard_negatives", [False, True], ids=["pairs", "triplets"])
def test_info_nce_equals_multiple_negatives_ranking_loss_at_scale_20(dtype, hard_negatives):
    anchors, positives, negatives = sentence_like(dtype)
    columns = [anchors, positives, negatives] if hard_negatives else [anchors, positives]
    reference = st_losses.MultipleNegativesRankingLoss(torch.nn.Identity(), scale=20.0)
    theirs, their_grads = loss_and_grads(lambda c: reference.compute_loss_from_embeddings(c, labels=None), columns)
    ours, our_grads = loss_and_grads(lambda c: info_nce(c[0], c[1], temperature=0.05, negatives=c[2] if hard_negatives else None), columns)
    candidates = B * len(columns[1:])
    assert 0.1 < theirs < math.log(candidates), "a loss this close to 0 or to chance would not tell the two apart"
    torch.testing.assert_close(ours, theirs, **TOLERANCES[dtype])
    for mine, reference_grad in zip(our_grads, their_grads):
        torch.testing.assert_close(mine, reference_grad, **TOLERANCES[dtype])


def test_a_temperature_mismatch_is_detected():
    """The control: MNRL's default scale 20 is not temperature 0.1, so the comparison above can fail."""
    anchors, positives, _ = sentence_like(torch.float64)
    reference = st_losses.MultipleNegativesRankingLoss(torch.nn.Identity(), scale=20.0)
    theirs = reference.compute_loss_from_embeddings([anchors, positives], labels=None)
    assert not torch.allclose(info_nce(anchors, positives, temperature=0.1), theirs, rtol=1e-3)
