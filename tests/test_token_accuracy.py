"""Masked-token and next-token accuracy, and the context-free baseline each evaluation is judged against."""

import pytest
import torch
from transformers import BertForMaskedLM

from nlpssl.data.collators import IGNORE_INDEX, CausalLMCollator, MLMCollator
from nlpssl.evaluation.token_accuracy import hit_counts, most_frequent_tokens
from nlpssl.models.text import bert_config, build_clm_model
from nlpssl.objectives.clm import CausalLM
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.recipes.pretrain import context_free_guesses
from nlpssl.steps import evaluation_totals
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, read_metrics, tiny_blocks


@pytest.fixture(scope="module")
def setup():
    return tiny_blocks(40)


def test_most_frequent_tokens_counts_leave_out_excluded_ids_and_break_ties_by_id():
    rows = [[4, 4, 2, 7], [7, 4, 1, 1, 1]]
    assert most_frequent_tokens(rows, vocab_size=9, k=3) == [1, 4, 7]
    assert most_frequent_tokens(rows, vocab_size=9, exclude=[1], k=3) == [4, 7, 2]


def test_context_free_guesses_count_the_rows_a_selection_holds(setup):
    tokenizer, blocks = setup
    chosen = blocks.select(range(1, len(blocks), 3))  # an indices mapping over the Arrow table
    by_row = most_frequent_tokens(chosen["input_ids"], len(tokenizer), tokenizer.all_special_ids)
    assert context_free_guesses(chosen, tokenizer, "bert") == by_row
    assert context_free_guesses(chosen, tokenizer, "bert") != context_free_guesses(blocks.select([0]), tokenizer, "bert")


def test_hit_counts_of_model_and_baseline():
    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0, 0.5, 0.4, 0.3], [5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 4.0]])  # (N=2, V=7)
    targets = torch.tensor([2, 6])
    counts = hit_counts(logits, targets, baseline_ids=torch.tensor([2, 0, 1, 3, 4]))
    assert counts["top1_accuracy"] == 0  # guesses 1 and 0
    assert counts["top5_accuracy"] == 2
    assert counts["baseline_top1_accuracy"] == 1  # always guesses 2
    assert counts["baseline_top5_accuracy"] == 1  # 6 is not among the baseline's five


def test_mlm_evaluation_counts_match_a_direct_count(setup):
    tokenizer, blocks = setup
    torch.manual_seed(0)
    objective = MaskedLM(BertForMaskedLM(bert_config(TINY_DIMS, tokenizer)))
    guesses = context_free_guesses(blocks, tokenizer, "bert")
    assert not set(guesses) & set(tokenizer.all_special_ids)
    objective.set_context_free_baseline(guesses)
    batches = [MLMCollator(tokenizer)([blocks[i] for i in range(j, j + 8)], generator=torch.Generator().manual_seed(j)) for j in (0, 8)]
    assert "eval_counts" not in objective(batches[0])  # a fresh module is in training mode: no counts
    objective.eval()
    loss_sum, targets, top1, top5, base1, base5 = evaluation_totals(objective, batches, torch.device("cpu")).tolist()
    labels = torch.cat([b["labels"][b["labels"] != IGNORE_INDEX] for b in batches])
    assert targets == len(labels)
    assert base1 == (labels == guesses[0]).sum().item()
    assert base5 == torch.isin(labels, torch.tensor(guesses)).sum().item()
    assert 0 <= top1 <= top5 <= targets


def test_training_logs_accuracy_and_the_baseline_for_mlm_and_clm(setup, tmp_path):
    tokenizer, blocks = setup
    mlm = MaskedLM(BertForMaskedLM(bert_config(TINY_DIMS, tokenizer)))
    mlm.set_context_free_baseline(context_free_guesses(blocks, tokenizer, "bert"))
    clm = CausalLM(build_clm_model(tokenizer, TINY_DIMS, block_size=32))
    clm.set_context_free_baseline(context_free_guesses(blocks, tokenizer, "gpt"))
    for name, objective, collator in (("mlm", mlm, MLMCollator(tokenizer)), ("clm", clm, CausalLMCollator(tokenizer))):
        cfg = TrainConfig(output_dir=str(tmp_path / name), max_steps=2, batch_size=4, eval_every=2, eval_batches=2, save_every=100)
        train(objective, blocks, collator, cfg, eval_dataset=blocks.select(range(8)), tokenizer=tokenizer)
        evaluation = [r for r in read_metrics(tmp_path / name) if "eval_loss" in r][-1]
        for key in ("eval_top1_accuracy", "eval_top5_accuracy", "eval_baseline_top1_accuracy", "eval_baseline_top5_accuracy"):
            assert 0.0 <= evaluation[key] <= 1.0, (name, key)
        assert evaluation["eval_baseline_top1_accuracy"] > 0.0, name  # the most frequent token occurs in 8 blocks
