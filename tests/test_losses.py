"""The five losses against naive loop references, analytic values and autograd's gradcheck.

Shapes: B batch, D width, M extra negatives, N patches, P patch values, L length, V vocab.
The references below spell every row out with math.exp / math.log on Python floats, so
they share no code path (normalize, matmul, cross_entropy) with the losses under test.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from nlpssl.losses import info_nce, masked_mse, negative_cosine, nt_xent, token_cross_entropy


def _randn(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# ----------------------------------------------------------------- naive references


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _cross_entropy_row(scores: list[float], target: int) -> float:
    """-log softmax(scores)[target], with the log-sum-exp written out."""
    return -scores[target] + math.log(sum(math.exp(s) for s in scores))


def naive_info_nce(query, keys, temperature, negatives=None) -> float:
    """Row i: positive keys[i]; candidates are every key, then every negative."""
    candidates = keys.tolist() + ([] if negatives is None else negatives.tolist())
    rows = [
        _cross_entropy_row([_cosine(q, c) / temperature for c in candidates], target=i)
        for i, q in enumerate(query.tolist())
    ]
    return sum(rows) / len(rows)


def naive_nt_xent(z1, z2, temperature) -> float:
    """All 2B rows; row i's partner is i +- B and row i never sees itself."""
    batch = z1.shape[0]
    views = z1.tolist() + z2.tolist()
    total = 0.0
    for i, anchor in enumerate(views):
        partner = (i + batch) % (2 * batch)
        others = [j for j in range(2 * batch) if j != i]
        scores = [_cosine(anchor, views[j]) / temperature for j in others]
        total += _cross_entropy_row(scores, target=others.index(partner))
    return total / (2 * batch)


def naive_negative_cosine(prediction, target) -> float:
    pairs = list(zip(prediction.tolist(), target.tolist()))
    return -sum(_cosine(p, z) for p, z in pairs) / len(pairs)


def naive_masked_mse(prediction, target, mask) -> float:
    """Mean over hidden patches of the per-patch mean squared error."""
    total, hidden = 0.0, 0
    for pred_row, target_row, mask_row in zip(prediction.tolist(), target.tolist(), mask.tolist()):
        for pred_patch, target_patch, is_hidden in zip(pred_row, target_row, mask_row):
            if is_hidden:
                total += sum((p - t) ** 2 for p, t in zip(pred_patch, target_patch)) / len(pred_patch)
                hidden += 1
    return total / hidden


def naive_token_cross_entropy(logits, labels) -> float:
    """Mean over positions whose label is not -100."""
    flat_logits = logits.reshape(-1, logits.shape[-1]).tolist()
    kept = [(row, label) for row, label in zip(flat_logits, labels.reshape(-1).tolist()) if label != -100]
    return sum(_cross_entropy_row(row, label) for row, label in kept) / len(kept)


# ----------------------------------------------------------------- against the references


@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0])
def test_info_nce_matches_naive_loop(temperature):
    query, keys = _randn(5, 7, seed=1), _randn(5, 7, seed=2)
    expected = naive_info_nce(query, keys, temperature)
    assert info_nce(query, keys, temperature).item() == pytest.approx(expected, rel=1e-9)


def test_info_nce_hard_negatives_are_extra_columns():
    query, keys, negatives = _randn(4, 6, seed=1), _randn(4, 6, seed=2), _randn(3, 6, seed=3)
    expected = naive_info_nce(query, keys, 0.1, negatives=negatives)
    got = info_nce(query, keys, 0.1, negatives=negatives)
    assert got.item() == pytest.approx(expected, rel=1e-9)
    # Extra negatives can only add to each row's denominator.
    assert got.item() > info_nce(query, keys, 0.1).item()


@pytest.mark.parametrize("temperature", [0.1, 1.0])
def test_nt_xent_matches_naive_loop(temperature):
    z1, z2 = _randn(4, 5, seed=3), _randn(4, 5, seed=4)
    assert nt_xent(z1, z2, temperature).item() == pytest.approx(naive_nt_xent(z1, z2, temperature), rel=1e-9)


def test_negative_cosine_matches_naive_loop():
    prediction, target = _randn(6, 5, seed=5), _randn(6, 5, seed=6)
    expected = naive_negative_cosine(prediction, target)
    assert negative_cosine(prediction, target).item() == pytest.approx(expected, rel=1e-9)


def test_masked_mse_matches_naive_loop():
    prediction, target = _randn(2, 5, 3, seed=7), _randn(2, 5, 3, seed=8)
    mask = torch.tensor([[1, 0, 1, 1, 0], [0, 0, 1, 0, 1]])
    expected = naive_masked_mse(prediction, target, mask)
    assert masked_mse(prediction, target, mask).item() == pytest.approx(expected, rel=1e-9)
    assert masked_mse(prediction, target, mask.bool()).item() == pytest.approx(expected, rel=1e-9)


def test_token_cross_entropy_matches_naive_loop():
    logits = _randn(2, 4, 6, seed=9)  # (B, L, V)
    labels = torch.tensor([[1, -100, 5, 0], [-100, 3, -100, 2]])  # (B, L)
    expected = naive_token_cross_entropy(logits, labels)
    assert token_cross_entropy(logits, labels).item() == pytest.approx(expected, rel=1e-9)


# ----------------------------------------------------------------- analytic values


@pytest.mark.parametrize("batch", [2, 5])
def test_identical_embeddings_give_log_batch_for_info_nce(batch):
    same = torch.ones(batch, 3)
    assert info_nce(same, same, 0.1).item() == pytest.approx(math.log(batch), rel=1e-6)
    negatives = torch.ones(4, 3)
    assert info_nce(same, same, 0.1, negatives=negatives).item() == pytest.approx(math.log(batch + 4), rel=1e-6)


@pytest.mark.parametrize("batch", [2, 5])
def test_identical_embeddings_give_log_2b_minus_1_for_nt_xent(batch):
    same = torch.ones(batch, 3)
    assert nt_xent(same, same, 0.5).item() == pytest.approx(math.log(2 * batch - 1), rel=1e-6)


@pytest.mark.parametrize("temperature", [0.05, 0.2, 1.0, 3.0])
def test_info_nce_temperature_divides_cosines(temperature):
    """One-hot rows: cos is 1 on the diagonal, 0 elsewhere, so each row is -1/t + log(e^{1/t} + B - 1)."""
    batch = 4
    eye = torch.eye(batch, dtype=torch.float64)  # float32 rounds the t=0.05 loss (6e-9) to 0
    expected = -1 / temperature + math.log(math.exp(1 / temperature) + batch - 1)
    assert info_nce(eye, eye, temperature).item() == pytest.approx(expected, rel=1e-5)


def test_info_nce_uses_cosine_so_row_scale_does_not_matter():
    query, keys = _randn(4, 6, seed=10), _randn(4, 6, seed=11)
    scales = torch.tensor([[0.1], [3.0], [7.0], [0.5]], dtype=torch.float64)  # (B, 1)
    assert info_nce(query * scales, keys, 0.2).item() == pytest.approx(info_nce(query, keys, 0.2).item(), rel=1e-12)


def test_lower_temperature_sharpens_a_correct_ranking():
    eye = torch.eye(4)
    losses = [info_nce(eye, eye, t).item() for t in (2.0, 0.5, 0.1, 0.02)]
    assert losses == sorted(losses, reverse=True) and losses[-1] < 1e-10


def test_nt_xent_perfect_pairs_on_orthogonal_directions():
    """z1[i] = z2[i] = e_i: row's positive cos 1, the other 2B-2 rows cos 0."""
    batch, temperature = 3, 0.5
    eye = torch.eye(batch)
    expected = -1 / temperature + math.log(math.exp(1 / temperature) + 2 * batch - 2)
    assert nt_xent(eye, eye * 4.0, temperature).item() == pytest.approx(expected, rel=1e-6)


def test_negative_cosine_extremes():
    target = _randn(5, 4, seed=12)
    assert negative_cosine(target * 3.0, target).item() == pytest.approx(-1.0, abs=1e-12)
    assert negative_cosine(-target, target).item() == pytest.approx(1.0, abs=1e-12)
    orthogonal = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.tensor([[0.0, 5.0], [1.0, 0.0]])
    assert negative_cosine(*orthogonal).item() == pytest.approx(0.0, abs=1e-7)


def test_masked_mse_ignores_unmasked_positions():
    target = _randn(2, 4, 3, seed=13)
    mask = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0]])  # (B, N)
    prediction = target + 2.0  # every hidden patch is off by 2 in every value
    wild = torch.where(mask.bool()[..., None], prediction, prediction + 1000.0).requires_grad_()
    loss = masked_mse(wild, target, mask)
    assert loss.item() == pytest.approx(4.0, rel=1e-12)
    loss.backward()
    assert torch.all(wild.grad[~mask.bool()] == 0)
    assert torch.all(wild.grad[mask.bool()] != 0)


def test_masked_mse_with_nothing_hidden_is_zero_not_nan():
    prediction, target = _randn(2, 3, 4, seed=14), _randn(2, 3, 4, seed=15)
    assert masked_mse(prediction, target, torch.zeros(2, 3)).item() == 0.0


def test_token_cross_entropy_all_ignored_is_zero_with_a_gradient_path():
    logits = _randn(2, 3, 5, seed=16).requires_grad_()
    loss = token_cross_entropy(logits, torch.full((2, 3), -100))
    assert loss.item() == 0.0 and not torch.isnan(loss)
    loss.backward()
    assert torch.all(logits.grad == 0)


def test_token_cross_entropy_ignores_minus_100_positions():
    logits = _randn(3, 4, 6, seed=17)
    labels = torch.tensor([[2, -100, 0, -100], [-100, -100, 5, 1], [3, -100, -100, -100]])
    changed = logits.clone()
    changed[labels == -100] = 1e4  # garbage where there is no target
    assert token_cross_entropy(changed, labels).item() == pytest.approx(token_cross_entropy(logits, labels).item())
    kept = labels != -100
    assert token_cross_entropy(logits, labels).item() == pytest.approx(F.cross_entropy(logits[kept], labels[kept]).item())


def test_token_cross_entropy_uniform_logits_give_log_vocab():
    vocab = 11
    assert token_cross_entropy(torch.zeros(2, 3, vocab), torch.randint(vocab, (2, 3))).item() == pytest.approx(math.log(vocab))


def test_gather_without_a_process_group_is_the_local_loss():
    query, keys, negatives = _randn(4, 6, seed=18), _randn(4, 6, seed=19), _randn(2, 6, seed=20)
    assert info_nce(query, keys, 0.1, negatives, gather=True).item() == info_nce(query, keys, 0.1, negatives).item()
    assert nt_xent(query, keys, 0.1, gather=True).item() == nt_xent(query, keys, 0.1).item()


# ----------------------------------------------------------------- gradients and dtypes


def _leaf(*shape: int, seed: int) -> torch.Tensor:
    return _randn(*shape, seed=seed).requires_grad_()


def test_gradcheck_info_nce_with_negatives():
    inputs = (_leaf(3, 4, seed=21), _leaf(3, 4, seed=22), _leaf(2, 4, seed=23))
    assert gradcheck(lambda q, k, n: info_nce(q, k, 0.3, negatives=n), inputs)


def test_gradcheck_nt_xent():
    assert gradcheck(lambda a, b: nt_xent(a, b, 0.3), (_leaf(3, 4, seed=24), _leaf(3, 4, seed=25)))


def test_gradcheck_negative_cosine():
    assert gradcheck(negative_cosine, (_leaf(3, 4, seed=26), _leaf(3, 4, seed=27)))


def test_gradcheck_masked_mse():
    mask = torch.tensor([[1, 0, 1], [0, 1, 1]])
    assert gradcheck(lambda p, t: masked_mse(p, t, mask), (_leaf(2, 3, 2, seed=28), _leaf(2, 3, 2, seed=29)))


def test_gradcheck_token_cross_entropy():
    labels = torch.tensor([[0, -100, 3], [2, 1, -100]])
    assert gradcheck(lambda logits: token_cross_entropy(logits, labels), (_leaf(2, 3, 4, seed=30),))


def _every_loss(dtype: torch.dtype) -> dict[str, torch.Tensor]:
    a, b, c = (_randn(4, 8, seed=s, dtype=dtype) for s in (31, 32, 33))
    logits, labels = _randn(2, 3, 8, seed=34, dtype=dtype), torch.tensor([[1, -100, 4], [7, 0, -100]])
    return {
        "info_nce": info_nce(a, b, 0.1, negatives=c),
        "nt_xent": nt_xent(a, b, 0.1),
        "negative_cosine": negative_cosine(a, b),
        "masked_mse": masked_mse(a.view(4, 2, 4), b.view(4, 2, 4), torch.tensor([[1, 0]] * 4)),
        "token_cross_entropy": token_cross_entropy(logits, labels),
    }


def test_bf16_inputs_give_float32_losses_close_to_float32():
    low, full = _every_loss(torch.bfloat16), _every_loss(torch.float32)
    for name, loss in low.items():
        assert loss.dtype == torch.float32, name
        assert torch.isfinite(loss), name
        assert loss.item() == pytest.approx(full[name].item(), rel=0.05, abs=0.02), name


def test_float64_inputs_stay_float64():
    """Upcasting is for half precision; silently rounding float64 to float32 broke gradcheck."""
    for name, loss in _every_loss(torch.float64).items():
        assert loss.dtype == torch.float64, name


def _contrastive_losses(z1: torch.Tensor, z2: torch.Tensor, extra: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every contrastive path at SimCSE's temperature 0.05, where a cosine's rounding error is multiplied by 20."""
    return {
        "info_nce": info_nce(z1, z2, 0.05),
        "info_nce_negatives": info_nce(z1, z2, 0.05, negatives=extra),
        "info_nce_queue": info_nce(z1, z2, 0.05, negatives=extra, in_batch_negatives=False),
        "nt_xent": nt_xent(z1, z2, 0.05),
    }


def test_contrastive_logits_are_float32_under_bf16_autocast():
    """Autocast would run normalize's output and the matmul in bf16 (cosine error ~4e-3, logit error ~0.08)."""
    common, z1, z2, extra = (_randn(n, 64, seed=seed, dtype=torch.float32) for n, seed in ((1, 0), (16, 1), (16, 2), (16, 3)))
    # Anisotropic, as sentence embeddings are: every cosine is high, so the logits are close and rounding matters.
    z1, extra = common + 0.5 * z1, common + 0.5 * extra  # (B, D), (M, D)
    z2 = z1 + 0.3 * z2  # (B, D) positives near their queries
    full = _contrastive_losses(z1, z2, extra)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = _contrastive_losses(z1, z2, extra)
        from_bf16 = _contrastive_losses(z1.bfloat16(), z2.bfloat16(), extra.bfloat16())  # what a bf16 model hands over
    rounded = _contrastive_losses(z1.bfloat16().float(), z2.bfloat16().float(), extra.bfloat16().float())
    for name in full:
        assert mixed[name].dtype == torch.float32, name
        torch.testing.assert_close(mixed[name], full[name], atol=1e-5, rtol=0, msg=name)
        torch.testing.assert_close(from_bf16[name], rounded[name], atol=1e-5, rtol=0, msg=name)
