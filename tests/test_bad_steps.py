"""Non-finite steps: a NaN or inf loss or gradient norm is skipped without touching the weights, logged, and
``train.max_bad_steps`` of them in a row end the run with one line. A batch without targets has loss 0, not NaN."""

from __future__ import annotations

import math

import pytest
import torch
from accelerate import Accelerator

from nlpssl.data.collators import IGNORE_INDEX, MLMCollator
from nlpssl.errors import UserError
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.steps import accumulate_gradients
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, read_metrics, tiny_blocks


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    return tiny_blocks(40)


class _Poisoned(MaskedLM):
    """MaskedLM whose training attempts listed in ``nan_loss`` return a NaN loss and in ``inf_grad`` an inf gradient.

    It also keeps the weights each training forward pass saw, to show what a skipped attempt left untouched.
    """

    def __init__(self, model, nan_loss=(), inf_grad=()) -> None:
        super().__init__(model)
        self.nan_loss, self.inf_grad = set(nan_loss), set(inf_grad)
        self.attempt, self.seen_weights = 0, []

    def forward(self, batch):
        out = super().forward(batch)
        if not self.training:
            return out
        self.attempt += 1  # one micro-batch per optimizer step in these tests
        self.seen_weights.append({name: p.detach().clone() for name, p in self.named_parameters()})
        if self.attempt in self.nan_loss:
            out["loss"] = out["loss"] * math.nan
        if self.attempt in self.inf_grad:  # the loss stays finite; one gradient does not
            bias = self.model.bert.embeddings.LayerNorm.bias
            out["loss"] = out["loss"] + (bias * 0.0).sum()
            bias.register_hook(lambda grad: grad * math.inf if self.attempt in self.inf_grad else grad)
        return out


def _train(setup, output_dir, max_steps, objective_options, **options):
    tokenizer, blocks = setup
    torch.manual_seed(0)
    objective = _Poisoned(build_mlm_model(tokenizer, TINY_DIMS), **objective_options)
    defaults = dict(batch_size=4, log_every=1, save_every=100, eval_every=100, warmup_steps=1, cpu_threads=1)
    cfg = TrainConfig(output_dir=str(output_dir), max_steps=max_steps, **(defaults | options))
    return train(objective, blocks, MLMCollator(tokenizer), cfg, tokenizer=tokenizer), objective


def _count_adamw_steps(monkeypatch) -> list:
    calls = []
    adamw_step = torch.optim.AdamW.step

    def counting_step(self, *args, **kwargs):
        calls.append(1)
        return adamw_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting_step)
    return calls


@pytest.mark.parametrize("poison, what", [("nan_loss", "loss and gradient norm"), ("inf_grad", "gradient norm")])
def test_a_non_finite_attempt_is_skipped_logged_and_leaves_weights_and_optimizer_alone(setup, tmp_path, monkeypatch, poison, what):
    adamw_steps = _count_adamw_steps(monkeypatch)
    trained, objective = _train(setup, tmp_path, 4, {poison: [2]})
    assert objective.attempt == 5 and len(adamw_steps) == 4  # 4 steps in 5 attempts: AdamW never saw the bad one
    before, after = objective.seen_weights[1], objective.seen_weights[2]  # around the skipped 2nd attempt
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert not torch.equal(objective.seen_weights[2]["model.bert.embeddings.LayerNorm.bias"], objective.seen_weights[3]["model.bert.embeddings.LayerNorm.bias"])
    assert all(torch.isfinite(p).all() for p in trained.parameters())
    records = read_metrics(tmp_path)
    assert {"step": 2, "skipped_non_finite": what} in records
    losses = [r for r in records if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4] and all(math.isfinite(r["loss"]) for r in losses)
    assert losses[1]["skipped_steps"] == 1  # step 2 was tried twice


def test_max_bad_steps_in_a_row_end_the_run_with_one_line(setup, tmp_path, monkeypatch):
    adamw_steps = _count_adamw_steps(monkeypatch)
    with pytest.raises(UserError) as error:
        _train(setup, tmp_path, 6, {"nan_loss": range(3, 100)}, max_bad_steps=3)
    message = str(error.value)
    assert "step 3:" in message and "3 attempts in a row" in message and "train.lr" in message
    assert "\n" not in message
    assert len(adamw_steps) == 2
    skipped = [r for r in read_metrics(tmp_path) if "skipped_non_finite" in r]
    assert [r["step"] for r in skipped] == [3, 3, 3]


def test_max_bad_steps_must_be_positive(setup, tmp_path):
    with pytest.raises(UserError, match="train.max_bad_steps=0"):
        _train(setup, tmp_path, 2, {}, max_bad_steps=0)


# ---- a batch without targets ----


def _no_targets(batch: dict) -> dict:
    return batch | {"labels": torch.full_like(batch["labels"], IGNORE_INDEX)}


@pytest.mark.parametrize("sparse", [True, False])
def test_a_batch_without_masked_tokens_has_loss_zero_and_zero_gradients(setup, sparse):
    tokenizer, blocks = setup
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS), sparse_prediction=sparse)
    batch = _no_targets(MLMCollator(tokenizer)([blocks[i] for i in range(4)], generator=torch.Generator().manual_seed(0)))
    loss = objective(batch)["loss"]
    loss.backward()
    assert loss.item() == 0.0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in objective.parameters())


def test_a_micro_batch_without_targets_adds_nothing_to_the_steps_mean(setup):
    """Normalised by the step's target count: [batch, no targets] has the loss and gradients of [batch] alone."""
    tokenizer, blocks = setup
    batch = MLMCollator(tokenizer)([blocks[i] for i in range(4)], generator=torch.Generator().manual_seed(0))
    results = []
    for micro_batches in ([batch], [batch, _no_targets(batch)], [_no_targets(batch)]):
        torch.manual_seed(0)
        objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
        totals = accumulate_gradients(Accelerator(cpu=True), objective, micro_batches)
        grads = torch.cat([p.grad.flatten() for p in objective.parameters() if p.grad is not None])
        results.append((float(totals.loss_sum / totals.targets), grads))
    (alone, alone_grads), (with_empty, with_empty_grads), (empty, empty_grads) = results
    assert with_empty == pytest.approx(alone) and torch.allclose(with_empty_grads, alone_grads)
    assert empty == 0.0 and torch.count_nonzero(empty_grads) == 0
