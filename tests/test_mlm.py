import pytest
import torch
from transformers import BertForMaskedLM

from nlpssl.data.collators import MLMCollator
from nlpssl.errors import UserError
from nlpssl.models.text import TransformerDims, bert_config, build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, tiny_blocks, train_losses


@pytest.fixture(scope="module")
def setup():
    return tiny_blocks(60)


def _batch(tokenizer, blocks, n=8, seed=0):
    rows = [blocks[i] for i in range(n)]
    return MLMCollator(tokenizer)(rows, generator=torch.Generator().manual_seed(seed))


def test_sparse_head_equals_full_head_and_hf_loss(setup):
    tokenizer, blocks = setup
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config(TINY_DIMS, tokenizer)).eval()
    batch = _batch(tokenizer, blocks)
    sparse = MaskedLM(model, sparse_prediction=True)(batch)["loss"]
    full = MaskedLM(model, sparse_prediction=False)(batch)["loss"]
    reference = model(**batch).loss  # Hugging Face's own full-head loss
    torch.testing.assert_close(sparse, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sparse, reference, rtol=1e-5, atol=1e-6)


def test_sparse_head_gradients_match_full_head(setup):
    tokenizer, blocks = setup
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config(TINY_DIMS, tokenizer)).eval()
    batch = _batch(tokenizer, blocks)
    grads = []
    for sparse in (True, False):
        model.zero_grad()
        MaskedLM(model, sparse_prediction=sparse)(batch)["loss"].backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_loss_falls_in_a_few_dozen_steps(setup, tmp_path):
    tokenizer, blocks = setup
    torch.manual_seed(0)
    objective = MaskedLM(build_mlm_model(tokenizer, TransformerDims(64, 2, 2, 128, 0.0, 64)))
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=60, batch_size=32, lr=5e-3, warmup_steps=5, log_every=5, save_every=1000)
    train(objective, blocks, MLMCollator(tokenizer), cfg, tokenizer=tokenizer)
    losses = [loss for _, loss in train_losses(tmp_path)]
    # From about log(V) = 6.2 to the unigram plateau and below; a broken update stays near log(V).
    late = sum(losses[-3:]) / 3
    assert losses[0] > 5.8 and late < losses[0] - 0.5, losses


def test_vocab_mismatch_is_a_user_error(setup, tmp_path):
    tokenizer, _ = setup
    small = BertForMaskedLM(bert_config(TINY_DIMS, tokenizer))
    small.resize_token_embeddings(100)
    small.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="tokenizer has 500 tokens but the model's vocabulary has 100"):
        build_mlm_model(tokenizer, checkpoint=str(tmp_path))


def test_missing_checkpoint_is_a_user_error(setup, tmp_path):
    tokenizer, _ = setup
    with pytest.raises(UserError, match="not found"):
        build_mlm_model(tokenizer, checkpoint=str(tmp_path / "missing"))
