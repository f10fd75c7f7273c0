"""Our loss core against lightly's losses on the same tensors.

Convention difference (MoCo): lightly's ``NTXentLoss`` with a memory bank, like
MoCo's Algorithm 1, scores each query against its own key and the bank only:
that is ``info_nce(..., negatives=bank, in_batch_negatives=False)``. The default
``info_nce(query, keys, t, negatives=bank)`` also keeps the other B - 1 current
keys as negatives (the SimCSE / CLIP form); it agrees with lightly row by row
(one query and its key at a time) and is larger for B > 1.

Normalisation: lightly takes bank rows as stored (its random initial rows are
unit length in float32 only); ``info_nce`` normalises every candidate. The
tests renormalise lightly's initial bank in float64 so both see the same rows.
"""

from __future__ import annotations

import importlib.util
import inspect
import sys

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import REPO_ROOT

if importlib.util.find_spec("lightly") is None:
    pytest.skip("lightly is not installed", allow_module_level=True)

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from lightly_side import SIMCLR_TEMPERATURE, import_lightly  # noqa: E402

import_lightly()
from lightly.loss import NegativeCosineSimilarity, NTXentLoss  # noqa: E402

import nlpssl.losses  # noqa: E402
import nlpssl.objectives.simcse  # noqa: E402
from nlpssl.losses import info_nce, negative_cosine, nt_xent  # noqa: E402


def random_pair(batch: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (B, D) float64 tensors, e.g. the projections of two views."""
    generator = torch.Generator().manual_seed(seed)
    first, second = torch.randn(2, batch, width, generator=generator, dtype=torch.float64)
    return first, second


@pytest.mark.parametrize("batch,temperature", [(2, 0.5), (8, 0.1), (33, 0.5), (64, 1.0)])
def test_nt_xent_matches_lightly(batch, temperature):
    z1, z2 = random_pair(batch, 16, seed=batch)
    expected = NTXentLoss(temperature=temperature, memory_bank_size=0)(z1, z2)
    torch.testing.assert_close(nt_xent(z1, z2, temperature), expected, rtol=1e-12, atol=1e-12)


def test_the_benchmarks_lightly_simclr_uses_ntxent_default_temperature():
    """vision_knn runs lightly's SimCLR as its docs do: NTXentLoss() at its own default."""
    assert inspect.signature(NTXentLoss.__init__).parameters["temperature"].default == SIMCLR_TEMPERATURE


@pytest.mark.parametrize("batch", [1, 5, 32])
def test_negative_cosine_matches_lightly(batch):
    prediction, target = random_pair(batch, 24, seed=batch)
    expected = NegativeCosineSimilarity()(prediction, target)
    torch.testing.assert_close(negative_cosine(prediction, target), expected, rtol=1e-12, atol=1e-12)


def moco_reference(temperature: float, bank_size: int, width: int, seed: int) -> NTXentLoss:
    """lightly's MoCo loss in float64, its random initial bank made unit length in float64 too."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # lightly fills its bank from the global RNG
        reference = NTXentLoss(temperature=temperature, memory_bank_size=(bank_size, width)).double()
    torch.testing.assert_close(reference.memory_bank.bank.norm(dim=1), torch.ones(bank_size, dtype=torch.float64))
    reference.memory_bank.bank = F.normalize(reference.memory_bank.bank, dim=1)  # (K, D)
    return reference


def moco_rows(query: torch.Tensor, keys: torch.Tensor, temperature: float, bank: torch.Tensor) -> torch.Tensor:
    """Default ``info_nce`` one row at a time: with one key there are no in-batch negatives left."""
    rows = [info_nce(query[i : i + 1], keys[i : i + 1], temperature, negatives=bank) for i in range(len(query))]
    return torch.stack(rows).mean()


def test_memory_bank_form_is_info_nce_against_own_key_and_bank():
    """lightly returns the bank as it was before this call (random unit rows at first), then enqueues the keys."""
    batch, width, bank_size, temperature = 6, 8, 16, 0.2
    reference = moco_reference(temperature, bank_size, width, seed=0)
    bank, pointer = reference.memory_bank.bank.clone(), 0  # (K, D) random unit rows, not current keys
    for step in range(4):  # 4 * 6 = 24 > 16 rows: the pointer wraps once
        query, keys = random_pair(batch, width, seed=step)
        query.requires_grad_(True)  # lightly only enqueues when the loss will be backpropagated
        expected = reference(query, keys)
        ours = info_nce(query, keys, temperature, negatives=bank, in_batch_negatives=False)
        torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
        bank, pointer = enqueue_like_lightly(bank, F.normalize(keys, dim=1), pointer)
        torch.testing.assert_close(reference.memory_bank.bank, bank, rtol=0, atol=0)


def enqueue_like_lightly(bank: torch.Tensor, keys: torch.Tensor, pointer: int) -> tuple[torch.Tensor, int]:
    """lightly's FIFO: write at the pointer; a batch that reaches the end is cut there and the pointer goes to 0.

    Unlike MoCo's queue (which asserts K % B == 0), the cut-off rows are dropped,
    not wrapped to the start. Here K = 16, B = 6: pointers 0, 6, 12 (4 rows kept), 0.
    """
    bank, written = bank.clone(), min(len(keys), len(bank) - pointer)
    bank[pointer : pointer + written] = keys[:written]
    next_pointer = pointer + len(keys)
    return bank, (0 if next_pointer >= len(bank) else next_pointer)


def test_default_info_nce_also_counts_the_other_current_keys_as_negatives():
    batch, width, temperature = 6, 8, 0.2
    reference = moco_reference(temperature, 32, width, seed=1)
    bank = reference.memory_bank.bank.clone()  # (K, D)
    query, keys = random_pair(batch, width, seed=9)
    lightly_loss = reference(query, keys)
    torch.testing.assert_close(moco_rows(query, keys, temperature, bank), lightly_loss, rtol=1e-12, atol=1e-12)
    assert info_nce(query, keys, temperature, negatives=bank) > lightly_loss + 0.1  # B - 1 more columns per row


def test_lightly_1_6_wants_the_bank_size_with_its_width():
    with pytest.raises(ValueError, match="feature"):
        NTXentLoss(memory_bank_size=4096)


def test_simcse_uses_the_loss_core_info_nce():
    assert nlpssl.objectives.simcse.info_nce is nlpssl.losses.info_nce
