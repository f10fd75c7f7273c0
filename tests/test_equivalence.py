"""One optimizer step is the same step however its rows are split into processes and micro-batches.

``nlpssl.steps.accumulate_gradients`` normalises by the number of targets of the whole
optimizer step (all micro-batches, all processes), so for token-level losses (MLM,
causal LM) whose micro-batches hold different numbers of targets, and for row-level
ones (classification, gathered SimCSE), loss and gradients of

    2 processes x B rows,  2 processes x 2 micro-batches x B/2,  1 process x 4 micro-batches x B/2

equal those of one batch of 2B rows on one process. The exception is SimCSE under
accumulation: its in-batch negatives are the micro-batch's, so the reference there is
the mean of the micro-batches' own losses. Models run in float64 without dropout, so
the comparisons are tight (rtol 1e-9, atol 1e-12; the logged float32 loss rel 1e-6); a control checks that the
mean of the micro-batch means (the old normalisation) is far from the reference.

Shapes: R rows of the whole step (8), L length, V vocab, W processes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification, BertModel, GPT2Config, GPT2LMHeadModel

from nlpssl.data.collators import IGNORE_INDEX
from nlpssl.models.heads import SentencePooler
from nlpssl.objectives.classification import SequenceClassification
from nlpssl.objectives.clm import CausalLM
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.objectives.simcse import SimCSE
from nlpssl.steps import Window, accumulate_gradients
from tests.helpers import accelerator_rank, run_gloo_ranks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROWS, LENGTH, VOCAB, WORLD = 8, 6, 40, 2
REAL_TOKENS = [6, 2, 6, 5, 3, 6, 2, 3]  # per row, the rest is padding: causal-LM targets 6, 9, 7, 3 per pair of rows
MASKED = [[1], [], [0, 2, 3, 5], [1, 4], [], [], [2], [0, 3]]  # MLM targets per row: 1, 6, 0, 3 per pair of rows
TOLERANCE = {"rtol": 1e-9, "atol": 1e-12}
# (processes, micro-batches per process): every split of the R rows of one step.
SPLITS = {"2 processes": (2, 1), "2 processes x 2 micro-batches": (2, 2), "4 micro-batches": (1, 4)}
OBJECTIVES = ("mlm", "clm", "classification", "simcse")


def _bert_config(**options) -> BertConfig:
    return BertConfig(
        vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **options,
    )


def _objectives() -> dict:
    """The four tiny text objectives in float64, without dropout (seeded: the same weights in every process)."""
    torch.manual_seed(0)
    gpt2 = GPT2Config(vocab_size=VOCAB, n_embd=16, n_layer=1, n_head=2, n_positions=16, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    objectives = {
        "mlm": MaskedLM(BertForMaskedLM(_bert_config())),
        "clm": CausalLM(GPT2LMHeadModel(gpt2)),
        "classification": SequenceClassification(BertForSequenceClassification(_bert_config(num_labels=3))),
        "simcse": SimCSE(BertModel(_bert_config(), add_pooling_layer=False), SentencePooler("mean"), num_views=2, gather=True),
    }
    return {name: objective.double().train() for name, objective in objectives.items()}


def _batches() -> dict[str, dict]:
    """The whole step's batch of each objective: R rows (R per view for SimCSE)."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(5, VOCAB, (ROWS, LENGTH), generator=generator)  # (R, L)
    mask = (torch.arange(LENGTH) < torch.tensor(REAL_TOKENS)[:, None]).long()  # (R, L)
    masked_labels = torch.full_like(ids, IGNORE_INDEX)
    for row, positions in enumerate(MASKED):
        masked_labels[row, positions] = ids[row, positions]
    other_ids = torch.randint(5, VOCAB, (ROWS, LENGTH), generator=generator)  # SimCSE's second view: other sentences
    return {
        "mlm": {"input_ids": ids, "attention_mask": mask, "labels": masked_labels},
        "clm": {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, IGNORE_INDEX)},
        "classification": {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (ROWS,), generator=generator)},
        "simcse": {"input_ids": torch.cat([ids, other_ids]), "attention_mask": torch.cat([mask, mask])},
    }


def _rows(name: str, batch: dict, start: int, stop: int) -> dict:
    """Rows start..stop of a batch; for SimCSE, of each view (views are stacked view-major)."""
    if name != "simcse":
        return {key: value[start:stop] for key, value in batch.items()}
    return {key: torch.cat([value[start:stop], value[ROWS + start : ROWS + stop]]) for key, value in batch.items()}


def _micro_batches(name: str, batch: dict, rank: int, processes: int, micro: int) -> list[dict]:
    """Process ``rank``'s micro-batches: its contiguous share of the rows, cut into ``micro`` pieces."""
    per_process = ROWS // processes
    size = per_process // micro
    first = rank * per_process
    return [_rows(name, batch, first + m * size, first + (m + 1) * size) for m in range(micro)]


def _gradients(objective) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in objective.named_parameters() if p.grad is not None}


def _step(accelerator: Accelerator, model, micro_batches: list[dict]) -> dict:
    """One accumulated step through the loop's function: its loss (float64, and as logged) and the gradients."""
    objective = accelerator.unwrap_model(model)
    objective.zero_grad(set_to_none=True)
    totals = accumulate_gradients(accelerator, model, micro_batches)
    loss_sum = accelerator.reduce(totals.loss_sum.detach().clone(), reduction="sum")
    window = Window()
    window.add(totals, seconds=1.0)
    logged = window.flush(accelerator)["loss"]  # the metrics.jsonl value (float32 on the way)
    return {"loss": loss_sum / totals.targets, "logged": logged, "grads": _gradients(objective)}


def _worker(objectives: dict, rank: int, port: int, out_dir: str) -> None:
    """One of W processes: every objective, every split that uses W processes."""
    with accelerator_rank(rank, WORLD, port) as accelerator:
        batches, results = _batches(), {}
        for name, objective in objectives.items():
            model = accelerator.prepare(objective)  # DistributedDataParallel: gradients averaged over W
            for split, (processes, micro) in SPLITS.items():
                if processes == WORLD and not (name == "simcse" and micro > 1):
                    results[name, split] = _step(accelerator, model, _micro_batches(name, batches[name], rank, processes, micro))
        simcse = objectives["simcse"].eval()
        with torch.no_grad():  # evaluation: no gather, each process's rows on their own
            results["simcse", "eval"] = simcse(_micro_batches("simcse", batches["simcse"], rank, WORLD, 1)[0])["loss"]
        simcse.train()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def objectives():
    return _objectives()


@pytest.fixture(scope="module")
def references(objectives) -> dict:
    """One process, one batch of all R rows: the definition of the step's loss and gradients."""
    results = {}
    for name, objective in objectives.items():
        objective.zero_grad(set_to_none=True)
        loss = objective(_batches()[name])["loss"]
        loss.backward()
        results[name] = {"loss": loss.detach(), "grads": _gradients(objective)}
        objective.zero_grad(set_to_none=True)
    return results


@pytest.fixture(scope="module")
def rank_results(objectives, tmp_path_factory) -> list[dict]:
    """W forked gloo processes, each holding a copy of the same objectives."""
    return run_gloo_ranks(functools.partial(_worker, objectives), WORLD, tmp_path_factory.mktemp("equivalence"), "fork")


def _assert_same_step(result: dict, reference: dict, what: str) -> None:
    torch.testing.assert_close(result["loss"], reference["loss"], **TOLERANCE, msg=f"{what}: loss")
    assert result["logged"] == pytest.approx(reference["loss"].item(), rel=1e-6), f"{what}: logged loss"
    assert result["grads"].keys() == reference["grads"].keys(), what
    for name, grad in reference["grads"].items():
        torch.testing.assert_close(result["grads"][name], grad, **TOLERANCE, msg=f"{what}: gradient of {name}")


TWO_PROCESS_CASES = [(name, "2 processes") for name in OBJECTIVES] + [
    (name, "2 processes x 2 micro-batches") for name in OBJECTIVES if name != "simcse"  # negatives are per micro-batch
]


@pytest.mark.parametrize(("name", "split"), TWO_PROCESS_CASES)
def test_two_processes_make_the_step_of_one_big_batch(rank_results, references, name, split):
    for rank, results in enumerate(rank_results):
        _assert_same_step(results[name, split], references[name], f"{name}, {split}, rank {rank}")


@pytest.mark.parametrize("name", ["mlm", "clm", "classification"])
def test_accumulation_makes_the_step_of_one_big_batch(objectives, references, name):
    accelerator = Accelerator(cpu=True)
    micro_batches = _micro_batches(name, _batches()[name], 0, 1, 4)
    _assert_same_step(_step(accelerator, objectives[name], micro_batches), references[name], f"{name}, 4 micro-batches")


def test_simcse_accumulation_averages_the_micro_batches(objectives):
    accelerator, objective = Accelerator(cpu=True), objectives["simcse"]
    micro_batches = _micro_batches("simcse", _batches()["simcse"], 0, 1, 4)
    objective.zero_grad(set_to_none=True)
    mean = torch.stack([objective(batch)["loss"] for batch in micro_batches]).mean()
    mean.backward()
    reference = {"loss": mean.detach(), "grads": _gradients(objective)}
    _assert_same_step(_step(accelerator, objective, micro_batches), reference, "simcse, 4 micro-batches")


@pytest.mark.parametrize("name", ["mlm", "clm"])
def test_micro_batches_hold_different_numbers_of_targets(objectives, references, name):
    """Guards the tests above: were the counts equal, a mean of micro-batch means would pass them too."""
    objective, batches = objectives[name], _micro_batches(name, _batches()[name], 0, 1, 4)
    counts = [int(objective.count_targets(batch)) for batch in batches]
    assert len(set(counts)) == len(counts), counts
    assert counts[0] + counts[1] != counts[2] + counts[3]  # the two processes' shares differ too
    with torch.no_grad():
        mean_of_means = torch.stack([objective(batch)["loss"] for batch in batches]).mean()
    assert abs(mean_of_means - references[name]["loss"]) > 1e-5  # over a thousand times the tolerance


def test_simcse_evaluation_scores_each_process_rows_alone(rank_results, objectives):
    """No collective in evaluation: processes may run different numbers of evaluation batches."""
    simcse = objectives["simcse"].eval()
    with torch.no_grad():
        for rank, results in enumerate(rank_results):
            alone = simcse(_micro_batches("simcse", _batches()["simcse"], rank, WORLD, 1)[0])["loss"]
            torch.testing.assert_close(results["simcse", "eval"], alone, **TOLERANCE)
    simcse.train()


@pytest.mark.parametrize("name", OBJECTIVES)
def test_target_counts_are_made_on_the_batch_device(objectives, name):
    """The loop stacks them with losses on the training device; "meta" stands for a GPU here."""
    objective, batch = objectives[name], _batches()[name]
    assert objective.count_targets({key: value.to("meta") for key, value in batch.items()}).device.type == "meta"
    with torch.no_grad():
        assert objective(batch)["num_targets"] == objective.count_targets(batch)
