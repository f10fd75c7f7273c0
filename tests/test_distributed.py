"""Two gloo processes with ``gather=True`` must reproduce one process over the whole batch.

Each rank r holds rows r*B:(r+1)*B of fixed (W*B, D) tensors. With the differentiable
gather, rank r's gradient for its rows already sums every rank's loss (the all_reduce in
backward), so it is the gradient of ``sum_r loss_r``. The big-batch loss is the mean over
W equal shards, ``(1/W) sum_r loss_r``, so big-batch gradients equal rank gradients / W:
exactly what DDP's gradient averaging applies to the parameters upstream.

Shapes: B local batch, W world, D width, M local hard negatives.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from nlpssl.losses import info_nce, nt_xent

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
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, timeout=timedelta(seconds=TIMEOUT_S))
    try:
        results = {
            case: _loss_and_grads(case, tuple(_shard(t, rank) for t in tensors), gather=True)
            for case, tensors in _full_inputs().items()
        }
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    """Launch WORLD gloo processes once; every test below reads their saved results."""
    out_dir = tmp_path_factory.mktemp("gather")
    context = multiprocessing.get_context("spawn")
    port = _free_port()
    processes = [context.Process(target=_worker, args=(rank, port, str(out_dir))) for rank in range(WORLD)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(TIMEOUT_S)
    hung = [p.pid for p in processes if p.is_alive()]
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(5)
    assert not hung, f"gloo workers {hung} did not finish within {TIMEOUT_S} s"
    assert [p.exitcode for p in processes] == [0] * WORLD, "a gloo worker failed; its traceback is in the captured stderr"
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD)]


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
