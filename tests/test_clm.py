"""Causal LM: the collator (pad == eos), the one shift, Hugging Face parity, training, the script."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, GPT2LMHeadModel, pipeline

from nlpssl.data.collators import IGNORE_INDEX, CausalLMCollator
from nlpssl.data.text import tokenize_and_pack
from nlpssl.data.tokenizer import train_tokenizer
from nlpssl.errors import UserError
from nlpssl.evaluation.generation import TextSample
from nlpssl.models.text import TransformerDims, build_clm_model, gpt2_config
from nlpssl.objectives.clm import CausalLM
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, TINY_OVERRIDES, bible_subset, read_metrics, train_losses

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    corpus = bible_subset(40)
    tokenizer = train_tokenizer(corpus["text"], kind="bpe", vocab_size=500, model_max_length=128)
    blocks, _ = tokenize_and_pack(corpus, tokenizer, block_size=32, style="gpt")
    return tokenizer, blocks


def _model(tokenizer, seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(gpt2_config(TINY_DIMS, tokenizer)).eval()


def _ragged(blocks, lengths=(32, 20, 9, 32)):
    """Rows of different lengths; every packed block holds document-ending eos tokens somewhere."""
    return [{"input_ids": blocks[i]["input_ids"][:n]} for i, n in enumerate(lengths)]


def test_collator_keeps_eos_targets_and_masks_only_padding(setup):
    tokenizer, _ = setup
    eos = tokenizer.eos_token_id
    assert tokenizer.pad_token_id == eos
    examples = [{"input_ids": [5, eos, 7, eos]}, {"input_ids": [eos, 9]}]
    batch = CausalLMCollator(tokenizer)(examples, generator=torch.Generator().manual_seed(0))
    assert batch["input_ids"].tolist() == [[5, eos, 7, eos], [eos, 9, eos, eos]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[5, eos, 7, eos], [eos, 9, IGNORE_INDEX, IGNORE_INDEX]]


def test_loss_equals_a_naive_next_token_loop(setup):
    tokenizer, blocks = setup
    model = _model(tokenizer)
    batch = CausalLMCollator(tokenizer)(_ragged(blocks))
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits  # (B, L, V)
    terms = []
    for row in range(logits.shape[0]):
        for position in range(logits.shape[1] - 1):
            target = batch["labels"][row, position + 1]
            if target != IGNORE_INDEX:
                terms.append(F.cross_entropy(logits[row, position], target))
    reference = torch.stack(terms).mean()
    for sparse in (True, False):
        out = CausalLM(model, sparse_prediction=sparse)(batch)
        torch.testing.assert_close(out["loss"], reference, rtol=1e-5, atol=1e-6)
        assert out["num_targets"] == len(terms) == 32 + 20 + 9 + 32 - 4
        assert out["num_tokens"] == 32 + 20 + 9 + 32


def test_loss_and_gradients_match_hugging_face_labels(setup):
    tokenizer, blocks = setup
    model = _model(tokenizer)
    batch = CausalLMCollator(tokenizer)([blocks[i] for i in range(4)])  # unpadded packed blocks
    model.zero_grad()
    reference = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
    reference.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss = CausalLM(model)(batch)["loss"]
    loss.backward()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
    for ours, theirs in zip((p.grad for p in model.parameters()), expected):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)


def test_loss_falls_in_thirty_steps(setup, tmp_path):
    tokenizer, blocks = setup
    torch.manual_seed(0)
    model = build_clm_model(tokenizer, TransformerDims(64, 2, 2, 128, 0.0, 32), block_size=32)
    cfg = TrainConfig(
        output_dir=str(tmp_path), max_steps=30, batch_size=16, lr=5e-3, warmup_steps=5, log_every=5, save_every=1000, cpu_threads=1
    )
    train(CausalLM(model), blocks, CausalLMCollator(tokenizer), cfg, tokenizer=tokenizer)
    losses = [loss for _, loss in train_losses(tmp_path)]
    # From about log(500) = 6.2 (the first window averages 5 steps) to the unigram plateau; a broken update stays high.
    assert losses[0] > 5.8 and losses[-1] < losses[0] - 0.6, losses


def test_text_sample_is_reproducible_and_leaves_the_rng_alone(setup):
    tokenizer, _ = setup
    model = _model(tokenizer).train()
    sample = TextSample(tokenizer, "In the beginning", max_new_tokens=8, top_k=20, seed=3)
    state = torch.get_rng_state()
    first, second = sample(CausalLM(model))["sample"], sample(CausalLM(model))["sample"]
    assert first == second and first.startswith("In the beginning")
    assert torch.equal(torch.get_rng_state(), state) and model.training


def test_checkpoint_with_too_few_positions_is_a_user_error(setup, tmp_path):
    tokenizer, _ = setup
    build_clm_model(tokenizer, TransformerDims(32, 1, 2, 64, 0.0, 16)).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="block_size=32 is longer than the model's 16 positions"):
        build_clm_model(tokenizer, checkpoint=str(tmp_path), block_size=32)


def test_pretrain_clm_two_steps_through_accelerate_launch(tmp_path):
    corpus = tmp_path / "chapters.jsonl"
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in bible_subset(80)["text"]))
    out = tmp_path / "clm"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes=1", "--cpu", "scripts/pretrain_clm.py"]
    args = [*TINY_OVERRIDES, f"--data.corpus={corpus}", f"--train.output_dir={out}"]
    args += ["--train.max_steps=2", "--train.eval_batches=2", "--train.cpu_threads=1"]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    result = subprocess.run([*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    evals = [r for r in read_metrics(out) if "eval_loss" in r]
    assert len(evals) == 1 and evals[0]["sample"].startswith("In the beginning") and evals[0]["eval_perplexity"] > 1
    assert type(AutoModelForCausalLM.from_pretrained(out / "final")).__name__ == "GPT2LMHeadModel"
    generate = pipeline("text-generation", model=str(out / "final"))
    text = generate("In the beginning", max_new_tokens=5, do_sample=False)[0]["generated_text"]
    assert text.startswith("In the beginning") and len(text) > len("In the beginning")
