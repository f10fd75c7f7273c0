"""GPU habits as options, checked on CPU: compile, gradient checkpointing, SDPA attention, padding to multiples of 8."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import nlpssl.runtime
from nlpssl.data.collators import ClassificationCollator, MLMCollator
from nlpssl.data.pairs import SentenceViewsCollator
from nlpssl.errors import UserError
from nlpssl.models.text import bert_config, build_clm_model, build_mlm_model, gpt2_config
from nlpssl.objectives.base import Objective
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.recipes.common import pad_multiple
from nlpssl.runtime import apply_model_options
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, tiny_blocks, train_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    return tiny_blocks(20)


def _train(setup, output_dir, **options):
    tokenizer, blocks = setup
    torch.manual_seed(0)
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    cfg = TrainConfig(output_dir=str(output_dir), max_steps=2, batch_size=4, log_every=1, save_every=100, warmup_steps=1, cpu_threads=1, **options)
    return train(objective, blocks, MLMCollator(tokenizer), cfg, tokenizer=tokenizer)


def test_compiled_objective_trains_like_eager(setup, tmp_path, monkeypatch):
    monkeypatch.setattr(nlpssl.runtime, "COMPILE_BACKEND", "aot_eager")  # dynamo + autograd graphs, no C++ compiler
    compiled = _train(setup, tmp_path / "compiled", compile=True)
    assert compiled._compiled_call_impl is not None  # nn.Module.compile: the objective itself, names unchanged
    _train(setup, tmp_path / "eager")
    eager, graph = train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")
    assert [step for step, _ in graph] == [1, 2] and eager[0][1] != eager[1][1]
    for (_, expected), (_, got) in zip(eager, graph):
        assert got == pytest.approx(expected, rel=1e-5)


def _gradients(objective: Objective, batch: dict) -> dict[str, torch.Tensor]:
    objective.zero_grad(set_to_none=True)
    torch.manual_seed(1)  # the same dropout masks; checkpointing replays them in the recomputation
    objective(batch)["loss"].backward()
    return {name: p.grad.clone() for name, p in objective.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(setup):
    tokenizer, blocks = setup
    torch.manual_seed(0)
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS)).train()  # dropout 0.1 on
    batch = MLMCollator(tokenizer)([blocks[i] for i in range(4)], generator=torch.Generator().manual_seed(0))
    plain = _gradients(objective, batch)
    apply_model_options(objective, gradient_checkpointing=True)
    assert any(getattr(module, "gradient_checkpointing", False) for module in objective.modules())  # the layers recompute
    checkpointed = _gradients(objective, batch)
    assert plain.keys() == checkpointed.keys()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)


def test_gradient_checkpointing_without_a_hugging_face_model_is_one_line():
    class Plain(Objective):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(2, 2)

    with pytest.raises(UserError, match="train.gradient_checkpointing=true, but Plain holds no Hugging Face model"):
        apply_model_options(Plain(), gradient_checkpointing=True)


def test_models_built_from_dimensions_use_sdpa_attention(setup):
    tokenizer, _ = setup
    assert bert_config(TINY_DIMS, tokenizer)._attn_implementation == "sdpa"
    assert gpt2_config(TINY_DIMS, tokenizer)._attn_implementation == "sdpa"
    assert build_mlm_model(tokenizer, TINY_DIMS).config._attn_implementation == "sdpa"
    assert build_clm_model(tokenizer, TINY_DIMS, block_size=32).config._attn_implementation == "sdpa"


def test_padding_collators_round_lengths_to_8_under_mixed_precision(setup):
    tokenizer, _ = setup
    assert pad_multiple(TrainConfig(precision="bf16")) == 8 and pad_multiple(TrainConfig(precision="fp16")) == 8
    assert pad_multiple(TrainConfig(precision="no")) is None
    rows = [{"text": "in the beginning god created the heaven and the earth."}, {"text": "and god said."}]
    plain = SentenceViewsCollator(tokenizer, ["text"], repeat=2)(rows)
    padded = SentenceViewsCollator(tokenizer, ["text"], repeat=2, pad_to_multiple_of=8)(rows)
    assert plain["input_ids"].shape[1] % 8 != 0 and padded["input_ids"].shape[1] % 8 == 0  # (4, 16) from (4, 13)
    assert torch.equal(padded["attention_mask"].sum(1), plain["attention_mask"].sum(1))
    examples = [{"input_ids": tokenizer(row["text"])["input_ids"], "labels": 0} for row in rows]
    batch = ClassificationCollator(tokenizer, pad_to_multiple_of=8)(examples)
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["attention_mask"].sum() == sum(len(e["input_ids"]) for e in examples)


def test_sharded_auto_wrap_takes_transformer_layers_but_not_tied_embeddings(setup):
    """FSDP's TRANSFORMER_BASED_WRAP reads ``_no_split_modules`` off the objective; BERT's embeddings share the decoder's weight."""
    tokenizer, _ = setup
    mlm = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    assert mlm.model._no_split_modules and "BertEmbeddings" in mlm.model._no_split_modules
    assert mlm._no_split_modules == ["BertLayer"]
    from nlpssl.objectives.clm import CausalLM

    assert CausalLM(build_clm_model(tokenizer, TINY_DIMS, block_size=32))._no_split_modules == ["GPT2Block"]
