"""Two gloo processes with ``gather=True`` must reproduce one process over the whole batch.

Each rank r holds rows r*B:(r+1)*B of fixed (W*B, D) tensors. With the differentiable
gather, rank r's gradient for its rows already sums every rank's loss (the all_reduce in
backward), so it is the gradient of ``sum_r loss_r``. The big-batch loss is the mean over
W equal shards, ``(1/W) sum_r loss_r``, so big-batch gradients equal rank gradients / W:
exactly what DDP's gradient averaging applies to the parameters upstream.

Shapes: B local batch, W world, D width, M local hard negatives.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from nlpssl.losses import info_nce, nt_xent
from tests.helpers import gloo_group, run_gloo_ranks

WORLD = 2
LOCAL_BATCH = 4
LOCAL_NEGATIVES = 3
WIDTH = 8
TIMEOUT_S = 60


def _full_inputs() -> dict[str, tuple[torch.Tensor, ...]]:
    """Every case's global inputs, first dimension W * (rows per rank); seeded, identical in every process."""
    generator = torch.Generator().manual_seed(0)

    def rows(count: int) -> torch.Tensor:
        return torch.randn(WORLD * count, WIDTH, generator=generator)  # (W*count, D)

    return {
        "info_nce": (rows(LOCAL_BATCH), rows(LOCAL_BATCH)),
        "nt_xent": (rows(LOCAL_BATCH), rows(LOCAL_BATCH)),
        "info_nce_negatives": (rows(LOCAL_BATCH), rows(LOCAL_BATCH), rows(LOCAL_NEGATIVES)),
    }


def _loss(case: str, tensors: tuple[torch.Tensor, ...], gather: bool) -> torch.Tensor:
    if case == "nt_xent":
        return nt_xent(*tensors, temperature=0.1, gather=gather)
    query, keys, *negatives = tensors
    return info_nce(query, keys, temperature=0.1, negatives=negatives[0] if negatives else None, gather=gather)


def _loss_and_grads(case: str, tensors: tuple[torch.Tensor, ...], gather: bool) -> dict:
    leaves = [t.clone().requires_grad_() for t in tensors]
    loss = _loss(case, leaves, gather)
    loss.backward()
    return {"loss": loss.detach(), "grads": [leaf.grad for leaf in leaves]}


def _shard(tensor: torch.Tensor, rank: int) -> torch.Tensor:
    rows = tensor.shape[0] // WORLD
    return tensor[rank * rows : (rank + 1) * rows]


def _worker(rank: int, port: int, out_dir: str) -> None:
    """One rank: loss and input gradients of every case with gather=True, saved to out_dir/rank{rank}.pt."""
    with gloo_group(rank, WORLD, port, TIMEOUT_S):
        results = {
            case: _loss_and_grads(case, tuple(_shard(t, rank) for t in tensors), gather=True)
            for case, tensors in _full_inputs().items()
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    """Launch WORLD gloo processes once; every test below reads their saved results."""
    return run_gloo_ranks(_worker, WORLD, tmp_path_factory.mktemp("gather"), "spawn", TIMEOUT_S)


@pytest.mark.parametrize("case", ["info_nce", "nt_xent", "info_nce_negatives"])
def test_gathered_loss_and_gradients_equal_the_big_batch(rank_results, case):
    tensors = _full_inputs()[case]
    big = _loss_and_grads(case, tensors, gather=False)

    rank_losses = torch.stack([result[case]["loss"] for result in rank_results])  # (W,)
    torch.testing.assert_close(rank_losses.mean(), big["loss"], atol=1e-5, rtol=0)
    for position, big_grad in enumerate(big["grads"]):
        for rank, result in enumerate(rank_results):
            rank_grad = result[case]["grads"][position]
            torch.testing.assert_close(rank_grad / WORLD, _shard(big_grad, rank), atol=1e-5, rtol=0)


def test_ranks_see_different_shards(rank_results):
    """Guards the test itself: identical rank results would make the comparison vacuous."""
    first, second = (result["info_nce"]["loss"] for result in rank_results)
    assert not torch.allclose(first, second)


@pytest.mark.parametrize("kind", ["mps", "xpu"])
def test_cpu_only_when_no_accelerator_of_any_kind(monkeypatch, kind):
    """Without CUDA but with Apple's MPS or Intel's XPU, Accelerate must be left to pick that device."""
    from nlpssl.distributed import cpu_only

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: torch.device(kind))
    monkeypatch.setattr(getattr(torch, kind), "is_available", lambda: True)
    assert not cpu_only()
    monkeypatch.setattr(getattr(torch, kind), "is_available", lambda: False)  # built for it, none visible
    assert cpu_only()
    monkeypatch.setattr(torch.accelerator, "current_accelerator", lambda check_available=False: None)
    assert cpu_only()
