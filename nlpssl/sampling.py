"""Deterministic, resumable batching: the data position is a function of the step.

Micro-step ``m`` reads global batch ``m`` of a seeded per-epoch permutation;
process ``r`` of ``W`` takes its slice of it. Masking and other collator
randomness use a generator seeded from (seed, m, rank). So a run resumed at
step N sees exactly the batches an uninterrupted run sees, on any world size
that was used before. Evaluation batches (:func:`make_eval_loader`) are the
same rows with the same randomness whatever the number of processes.

Shapes: N rows, B batch per process, W processes, G global batches per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch.utils.data import DataLoader

from nlpssl.errors import UserError


MEGA_BATCHES = 50  # length grouping sorts within this many global batches


@dataclass(frozen=True)
class BatchKey:
    """Which micro-step a batch belongs to and which rows it holds."""

    step: int
    indices: list[int]


class StepBatchSampler:
    """Yields :class:`BatchKey` for micro-steps ``start_step, start_step + 1, ...`` forever."""

    def __init__(
        self, num_rows: int, batch_size: int, rank: int, world_size: int, seed: int, start_step: int = 0,
        lengths: Sequence[int] | None = None,
    ) -> None:
        global_batch = batch_size * world_size
        if num_rows < global_batch:
            raise UserError(
                f"the dataset has {num_rows} rows, fewer than one global batch of {global_batch} "
                f"(train.batch_size x processes); lower train.batch_size or add data"
            )
        self.batches_per_epoch = num_rows // global_batch
        self.num_rows, self.batch_size, self.rank, self.world_size = num_rows, batch_size, rank, world_size
        self.global_batch, self.seed, self.start_step = global_batch, seed, start_step
        self.lengths = torch.as_tensor(lengths) if lengths is not None else None  # (N,)

    def __iter__(self) -> Iterator[BatchKey]:
        step, epoch, order = self.start_step, -1, None
        while True:
            this_epoch, position = divmod(step, self.batches_per_epoch)
            if this_epoch != epoch:
                epoch = this_epoch
                generator = torch.Generator().manual_seed(self.seed + epoch)
                order = torch.randperm(self.num_rows, generator=generator)
                if self.lengths is not None:
                    order = self._group_by_length(order, generator)
            start = position * self.global_batch + self.rank * self.batch_size
            yield BatchKey(step, order[start : start + self.batch_size].tolist())
            step += 1

    def _group_by_length(self, order: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Sort rows by length inside chunks of MEGA_BATCHES global batches, shuffle the batches, deal the slices.

        Batches hold rows of similar length (little padding) and still come in
        random order. A sorted global batch cut into W slices has its longest
        rows in the first slice: each batch deals its slices to the processes in
        a fresh seeded order, so no process is systematically the slowest (or the
        one that runs out of memory).
        """
        usable = order[: self.batches_per_epoch * self.global_batch]  # (N',)
        chunks = [c[torch.argsort(self.lengths[c], descending=True, stable=True)] for c in usable.split(MEGA_BATCHES * self.global_batch)]
        batches = torch.cat(chunks).view(-1, self.global_batch)  # (G, W*B)
        batches = batches[torch.randperm(len(batches), generator=generator)]
        slices = batches.view(len(batches), self.world_size, self.batch_size)  # (G, W, B), longest slice first
        dealt = torch.rand(len(batches), self.world_size, generator=generator).argsort(dim=1)  # (G, W): slice of each rank
        return slices[torch.arange(len(batches)).unsqueeze(1), dealt].flatten()


class EvalBatchSampler:
    """The evaluation batches of one process: batch ``k`` of a fixed seeded order for ``k = rank, rank + W, ...``.

    Batch ``k`` holds rows ``k*B .. (k+1)*B`` of the order whatever W is, and
    its collator is seeded by ``k`` alone, so every evaluation sees the same
    rows and masks on any number of processes (processes may run one batch
    more than others).
    """

    def __init__(self, num_rows: int, batch_size: int, rank: int, world_size: int, seed: int, max_batches: int) -> None:
        if num_rows < batch_size:
            raise UserError(f"the validation set has {num_rows} rows, fewer than one batch of {batch_size}; lower train.batch_size")
        self.num_rows, self.batch_size, self.rank, self.world_size, self.seed = num_rows, batch_size, rank, world_size, seed
        self.num_batches = min(max_batches, num_rows // batch_size)

    def __iter__(self) -> Iterator[BatchKey]:
        order = torch.randperm(self.num_rows, generator=torch.Generator().manual_seed(self.seed))  # (N,)
        for k in range(self.rank, self.num_batches, self.world_size):
            yield BatchKey(k, order[k * self.batch_size : (k + 1) * self.batch_size].tolist())

    def __len__(self) -> int:
        return len(range(self.rank, self.num_batches, self.world_size))


class _KeyedRows:
    """Dataset view that answers a :class:`BatchKey` with (step, rows)."""

    def __init__(self, dataset) -> None:
        self.dataset = dataset

    def __getitems__(self, key: BatchKey) -> tuple[int, list]:
        if hasattr(self.dataset, "__getitems__"):
            return key.step, self.dataset.__getitems__(key.indices)
        return key.step, [self.dataset[i] for i in key.indices]

    def __len__(self) -> int:
        return len(self.dataset)


class _SeededCollate:
    def __init__(self, collator: Callable, seed: int, rank: int) -> None:
        self.collator, self.seed, self.rank = collator, seed, rank

    def __call__(self, keyed: tuple[int, list]) -> dict:
        step, rows = keyed
        generator = torch.Generator().manual_seed(batch_seed(self.seed, step, self.rank))
        return self.collator(rows, generator=generator)


def batch_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the collator's generator for one micro-step on one process."""
    return ((seed * 1_000_003 + step) * 4099 + rank) % (2**63 - 1)


def make_loader(
    dataset, collator: Callable, batch_size: int, rank: int, world_size: int,
    seed: int, start_step: int = 0, num_workers: int = 0, lengths: Sequence[int] | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """An endless DataLoader of collated batches starting at micro-step ``start_step``.

    With ``lengths`` (one per row) batches are grouped by length (see
    :meth:`StepBatchSampler._group_by_length`). ``pin_memory`` (for a CUDA
    device) lets the copy to the device overlap with compute.

    Example::

        loader = make_loader(blocks, MLMCollator(tokenizer), 32, rank=0, world_size=1, seed=0)
        batch = next(iter(loader))
    """
    sampler = StepBatchSampler(len(dataset), batch_size, rank, world_size, seed, start_step, lengths)
    return DataLoader(
        _KeyedRows(dataset),
        batch_sampler=sampler,
        collate_fn=_SeededCollate(collator, seed, rank),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory,
        # Its own generator: creating an iterator must not draw from the global RNG
        # (that would shift dropout after a resume).
        generator=torch.Generator().manual_seed(seed),
    )


def make_eval_loader(
    dataset, collator: Callable, batch_size: int, rank: int, world_size: int,
    seed: int, max_batches: int, num_workers: int = 0, pin_memory: bool = False,
) -> DataLoader:
    """This process's share of ``min(max_batches, N // batch_size)`` evaluation batches (see :class:`EvalBatchSampler`).

    Example::

        batches = make_eval_loader(valid, MLMCollator(tokenizer), 32, rank=0, world_size=2, seed=0, max_batches=20)
        losses = [objective(batch)["loss"] for batch in batches]   # batches 0, 2, 4, ... of 20
    """
    sampler = EvalBatchSampler(len(dataset), batch_size, rank, world_size, seed, max_batches)
    return DataLoader(
        _KeyedRows(dataset),
        batch_sampler=sampler,
        collate_fn=_SeededCollate(collator, seed, rank=0),  # seeded by the batch alone: the same masks on any W
        num_workers=num_workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(seed),
    )
