import torch

from nlpssl.sampling import StepBatchSampler, make_eval_loader, make_loader


def _take(sampler, count):
    iterator = iter(sampler)
    return [next(iterator) for _ in range(count)]


def test_each_epoch_is_a_permutation_split_across_processes():
    per_rank = [_take(StepBatchSampler(40, 4, rank, 2, seed=0), 5) for rank in (0, 1)]
    rows = [i for keys in per_rank for key in keys for i in key.indices]
    assert sorted(rows) == list(range(40))
    assert [k.step for k in per_rank[0]] == [0, 1, 2, 3, 4]


def test_start_step_continues_the_same_stream():
    straight = _take(StepBatchSampler(30, 4, 0, 1, seed=3), 12)
    resumed = _take(StepBatchSampler(30, 4, 0, 1, seed=3, start_step=5), 7)
    assert [k.indices for k in straight[5:]] == [k.indices for k in resumed]


def test_length_grouping_cuts_padding_and_stays_deterministic():
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 100, (2000,), generator=generator).tolist()
    grouped = _take(StepBatchSampler(2000, 16, 0, 1, seed=1, lengths=lengths), 125)
    plain = _take(StepBatchSampler(2000, 16, 0, 1, seed=1), 125)

    def padding(keys):
        return sum(max(lengths[i] for i in k.indices) * 16 - sum(lengths[i] for i in k.indices) for k in keys)

    assert padding(grouped) < 0.2 * padding(plain)
    assert sorted(i for k in grouped for i in k.indices) == list(range(2000))  # still one epoch, every row once
    again = _take(StepBatchSampler(2000, 16, 0, 1, seed=1, lengths=lengths, start_step=60), 5)
    assert [k.indices for k in again] == [k.indices for k in grouped[60:65]]
    first_batch_lengths = [max(lengths[i] for i in k.indices) for k in grouped[:10]]
    assert first_batch_lengths != sorted(first_batch_lengths, reverse=True)  # batch order is shuffled


def test_loader_seeds_collation_per_step():
    seen = []

    def collate(rows, generator):
        seen.append(torch.rand(1, generator=generator).item())
        return {"x": torch.tensor(rows)}

    list(zip(range(3), make_loader(list(range(12)), collate, 4, 0, 1, seed=0)))
    first = list(seen)
    seen.clear()
    list(zip(range(2), make_loader(list(range(12)), collate, 4, 0, 1, seed=0, start_step=1)))
    assert seen == first[1:]


def test_length_grouping_does_not_give_rank_zero_the_longest_rows():
    """A sorted global batch cut by rank put the longest slice on rank 0 at every step."""
    lengths = torch.randint(1, 500, (1600,), generator=torch.Generator().manual_seed(0)).tolist()
    steps = 100  # one epoch of 1600 / (8 * 2) global batches
    per_rank = [_take(StepBatchSampler(1600, 8, rank, 2, seed=1, lengths=lengths), steps) for rank in (0, 1)]
    longest = [[max(lengths[i] for i in key.indices) for key in keys] for keys in per_rank]  # (W, steps)
    rank0_longer = sum(a > b for a, b in zip(*longest))
    assert 30 <= rank0_longer <= 70, rank0_longer  # about half the steps; 100 before
    for first, second in zip(*per_rank):  # each global batch still holds rows of similar length
        spread = sorted(lengths[i] for i in first.indices + second.indices)
        assert spread[-1] - spread[0] < 60
    assert sorted(i for keys in per_rank for key in keys for i in key.indices) == list(range(1600))
    for rank in (0, 1):  # resume continues each rank's stream
        again = _take(StepBatchSampler(1600, 8, rank, 2, seed=1, lengths=lengths, start_step=40), 5)
        assert [k.indices for k in again] == [k.indices for k in per_rank[rank][40:45]]


def test_evaluation_batches_are_the_same_on_any_number_of_processes():
    def collate(rows, generator):
        return {"rows": torch.tensor(rows), "mask_draw": torch.rand(1, generator=generator)}

    def batches(world_size):
        seen = []
        for rank in range(world_size):
            seen += list(make_eval_loader(list(range(50)), collate, 4, rank, world_size, seed=7, max_batches=5))
        return sorted((batch["rows"].tolist(), batch["mask_draw"].item()) for batch in seen)

    one = batches(1)
    assert len(one) == 5 and len({r for rows, _ in one for r in rows}) == 20
    assert batches(2) == one and batches(3) == one
    assert [len(make_eval_loader(list(range(50)), collate, 4, r, 2, 7, max_batches=5)) for r in (0, 1)] == [3, 2]
    assert len(make_eval_loader(list(range(10)), collate, 4, 0, 1, 7, max_batches=5)) == 2  # only whole batches
