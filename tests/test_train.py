import json
import math

import pytest
import torch

from nlpssl.checkpoints import complete_checkpoints, find_resume_point
from nlpssl.data.collators import MLMCollator
from nlpssl.data.text import tokenize_and_pack
from nlpssl.errors import UserError
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.optim import learning_rate, parameter_groups
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, bible_subset, read_metrics, tiny_wordpiece, train_losses


@pytest.fixture(scope="module")
def setup():
    corpus = bible_subset(40)
    tokenizer = tiny_wordpiece(corpus["text"])
    blocks, _ = tokenize_and_pack(corpus, tokenizer, block_size=32)
    return tokenizer, blocks


def _run(setup, output_dir, max_steps, init_seed=0, **options):
    tokenizer, blocks = setup
    torch.manual_seed(init_seed)
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    defaults = dict(batch_size=4, grad_accum_steps=2, log_every=1, save_every=3, eval_every=3, eval_batches=2, warmup_steps=2)
    cfg = TrainConfig(output_dir=str(output_dir), max_steps=max_steps, **(defaults | options))
    return train(objective, blocks, MLMCollator(tokenizer), cfg, eval_dataset=blocks, tokenizer=tokenizer)


def test_resume_reproduces_every_step(setup, tmp_path):
    _run(setup, tmp_path / "straight", 6)
    _run(setup, tmp_path / "resumed", 3)
    # The second process starts from another init and another global RNG state:
    # only a real restore of weights, optimizer, RNG and data position can match.
    torch.manual_seed(999)
    _run(setup, tmp_path / "resumed", 6, init_seed=123, resume="auto")
    straight, resumed = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert [s for s, _ in straight] == [1, 2, 3, 4, 5, 6]
    assert straight == resumed
    fresh = tmp_path / "fresh"
    _run(setup, fresh, 3, init_seed=123)
    assert train_losses(fresh)[0] != straight[0], "the control run must differ, or the test proves nothing"


def test_metrics_and_outputs(setup, tmp_path):
    _run(setup, tmp_path, 6)
    records = read_metrics(tmp_path)
    train_records = [r for r in records if "loss" in r]
    assert {"step", "loss", "lr", "tokens_per_s"} <= set(train_records[0])
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert math.isclose(evals[0]["eval_perplexity"], math.exp(evals[0]["eval_loss"]), rel_tol=1e-9)
    assert (tmp_path / "final" / "config.json").is_file() and (tmp_path / "final" / "tokenizer.json").is_file()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000003", "step_000006"]
    assert (tmp_path / "checkpoints" / "step_000003" / "model" / "model.safetensors").is_file()


def test_keeps_only_the_newest_checkpoints(setup, tmp_path):
    _run(setup, tmp_path, 10, save_every=2, keep_checkpoints=2, eval_every=100)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000008", "step_000010"]


def test_partial_checkpoint_is_ignored(setup, tmp_path):
    _run(setup, tmp_path, 3)
    crashed = tmp_path / "checkpoints" / "step_000009.tmp"
    crashed.mkdir()
    (crashed / "trainer_state.json").write_text(json.dumps({"step": 9}))
    assert find_resume_point(tmp_path, "auto").name == "step_000003"
    with pytest.raises(UserError, match="not a complete checkpoint"):
        find_resume_point(tmp_path, str(tmp_path / "checkpoints" / "step_000007"))


def test_learning_rate_is_warmup_then_cosine():
    def lr(step):
        return learning_rate(step, peak=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)

    assert lr(0) == pytest.approx(0.1)
    assert lr(9) == pytest.approx(1.0)
    assert lr(60) == pytest.approx(0.55)
    assert lr(110) == pytest.approx(0.1)
    assert all(lr(s) >= lr(s + 1) for s in range(10, 110))


def test_weight_decay_by_rank(setup):
    tokenizer, _ = setup
    model = build_mlm_model(tokenizer, TINY_DIMS)
    decayed, plain = parameter_groups(model, 0.01)
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert plain["weight_decay"] == 0.0
    total = sum(1 for p in model.parameters())
    assert len(decayed["params"]) + len(plain["params"]) == total


def test_validation_smaller_than_a_batch_fails_before_training(setup, tmp_path):
    tokenizer, blocks = setup
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=2, batch_size=4)
    with pytest.raises(UserError, match="validation set has 3 rows"):
        train(objective, blocks, MLMCollator(tokenizer), cfg, eval_dataset=blocks.select(range(3)))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_dataset_smaller_than_a_batch(setup, tmp_path):
    tokenizer, blocks = setup
    with pytest.raises(UserError, match="fewer than one global batch"):
        _run((tokenizer, blocks.select(range(3))), tmp_path, 2)
