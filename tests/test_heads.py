"""Poolers and heads: mask-aware mean, CLS, MLP shapes, SimCSE's train/test poolers, saved-folder pooling."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import BertConfig, BertModel

from nlpssl.errors import UserError
from nlpssl.models.heads import MLPHead, SentencePooler, TanhPooler, pool
from nlpssl.models.sentence_folder import folder_pooling

B, L, D = 3, 6, 8


@pytest.fixture
def padded_batch():
    """(B, L, D) states whose padding positions hold large garbage, and the (B, L) mask."""
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(B, L, D, generator=generator)
    lengths = torch.tensor([6, 3, 1])
    mask = (torch.arange(L)[None, :] < lengths[:, None]).long()  # (B, L)
    hidden = hidden.masked_fill(~mask.bool()[..., None], 1e4)
    return hidden, mask, lengths


def test_mean_pooling_ignores_padding_exactly(padded_batch):
    hidden, mask, lengths = padded_batch
    pooled = pool(hidden, mask, "mean")  # (B, D)
    assert pooled.shape == (B, D)
    for row, length in enumerate(lengths):
        assert torch.equal(pooled[row], hidden[row, :length].sum(0) / length)


def test_mean_pooling_does_not_depend_on_how_much_padding_follows(padded_batch):
    hidden, mask, _ = padded_batch
    extra = torch.full((B, 4, D), -7.0)  # more padding after every row
    longer = pool(torch.cat([hidden, extra], 1), torch.cat([mask, torch.zeros(B, 4, dtype=mask.dtype)], 1), "mean")
    # equal up to float summation order: the reduction over L is split differently
    torch.testing.assert_close(longer, pool(hidden, mask, "mean"))


def test_cls_picks_position_zero_and_unknown_method_is_a_user_error(padded_batch):
    hidden, mask, _ = padded_batch
    assert torch.equal(pool(hidden, mask, "cls"), hidden[:, 0])
    with pytest.raises(UserError, match="unknown pooling method 'max'"):
        pool(hidden, mask, "max")


def test_projection_and_mlp_head_shapes():
    x = torch.randn(4, D)
    assert TanhPooler(D)(x).shape == (4, D)
    assert TanhPooler(D, 5)(x).abs().max() <= 1  # tanh
    assert MLPHead(D, hidden_dim=16, out_dim=5)(x).shape == (4, 5)
    plain = MLPHead(D, hidden_dim=16, out_dim=5, batch_norm=False)
    assert not any(isinstance(layer, torch.nn.BatchNorm1d) for layer in plain.modules())
    assert plain(x).shape == (4, 5)


def test_sentence_pooler_train_and_test_embeddings(padded_batch):
    hidden, mask, _ = padded_batch
    before = SentencePooler("cls_before_pooler", hidden_size=D)
    assert torch.equal(before(hidden, mask), before.mlp(hidden[:, 0]))  # MLP while training
    assert torch.equal(before.embed(hidden, mask), hidden[:, 0])  # raw [CLS] at test time
    assert before.export_pooling == "cls"
    cls = SentencePooler("cls", hidden_size=D)
    assert torch.equal(cls.embed(hidden, mask), cls(hidden, mask)) and cls.export_pooling == "pooler"
    mean = SentencePooler("mean")
    assert mean.mlp is None and not list(mean.parameters()) and mean.export_pooling == "mean"
    assert torch.equal(mean.embed(hidden, mask), pool(hidden, mask, "mean"))
    with pytest.raises(UserError, match="unknown SimCSE pooler"):
        SentencePooler("avg_first_last", hidden_size=D)


def test_cls_mlp_copied_into_bert_pooler_gives_the_same_embedding():
    config = BertConfig(vocab_size=50, hidden_size=D, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    encoder = BertModel(config).eval()
    pooler = SentencePooler("cls", hidden_size=D)
    pooler.copy_mlp_into(encoder)
    ids = torch.randint(5, 50, (2, 7))
    mask = torch.ones_like(ids)
    out = encoder(input_ids=ids, attention_mask=mask)
    torch.testing.assert_close(out.pooler_output, pooler.embed(out.last_hidden_state, mask))
    with pytest.raises(UserError, match="no pooler.dense"):
        pooler.copy_mlp_into(torch.nn.Linear(D, D))


def test_folder_pooling_reads_sentence_transformers_configs(tmp_path, minilm_path):
    assert folder_pooling(minilm_path) == "mean"  # old boolean format
    assert folder_pooling(tmp_path) is None
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "cls"}))  # sentence-transformers >= 6
    assert folder_pooling(tmp_path) == "cls"
    modules = [{"path": "1_Pooling", "type": "x.Pooling"}, {"path": "2_Lstm", "type": "sentence_transformers.models.LSTM"}]
    (tmp_path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UserError, match="modules beyond pooling .*LSTM"):
        folder_pooling(tmp_path)
