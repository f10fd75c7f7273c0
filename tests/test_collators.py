import pytest
import torch

from nlpssl.data.collators import IGNORE_INDEX, MLMCollator
from nlpssl.data.text import tokenize_and_pack
from nlpssl.errors import UserError
from tests.helpers import bible_subset, tiny_wordpiece


@pytest.fixture(scope="module")
def packed():
    corpus = bible_subset(200)
    tokenizer = tiny_wordpiece(corpus["text"])
    blocks, _ = tokenize_and_pack(corpus, tokenizer, block_size=128)
    rows = blocks[:1000]  # 1000 x 128 = 128k tokens
    examples = [dict(zip(rows, values)) for values in zip(*rows.values())]
    return tokenizer, examples


def _masking_stats(tokenizer, examples, **options):
    collate = MLMCollator(tokenizer, **options)
    batch = collate(examples, generator=torch.Generator().manual_seed(0))
    original = torch.tensor([e["input_ids"] for e in examples])
    special = torch.tensor([e["special_tokens_mask"] for e in examples]).bool()
    chosen = batch["labels"] != IGNORE_INDEX
    return batch, original, special, chosen


def test_80_10_10_on_100k_tokens(packed):
    tokenizer, examples = packed
    batch, original, special, chosen = _masking_stats(tokenizer, examples)
    candidates = (~special).sum().item()
    assert candidates > 100_000
    assert abs(chosen.sum().item() / candidates - 0.15) < 0.005
    masked = batch["input_ids"][chosen] == tokenizer.mask_token_id
    kept = batch["input_ids"][chosen] == original[chosen]
    random = ~masked & ~kept
    n = chosen.sum().item()
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    # A random draw can land on the original token (1 / V'), so "kept" is a little over 10%.
    assert abs(kept.sum().item() / n - 0.1) < 0.01
    assert abs(random.sum().item() / n - 0.1) < 0.01
    assert torch.equal(batch["labels"][chosen], original[chosen])


def test_special_tokens_never_chosen_nor_drawn(packed):
    tokenizer, examples = packed
    batch, original, special, chosen = _masking_stats(tokenizer, examples, mask_prob=0.9, mask_token_frac=0.0, random_token_frac=1.0)
    assert not (chosen & special).any()
    assert torch.equal(batch["input_ids"][special], original[special])
    specials = torch.tensor(tokenizer.all_special_ids)
    assert not torch.isin(batch["input_ids"][chosen], specials).any()


def test_padding_never_masked(packed):
    tokenizer, _ = packed
    examples = [{"input_ids": tokenizer("in the beginning god created")["input_ids"]}, {"input_ids": tokenizer("light")["input_ids"]}]
    batch = MLMCollator(tokenizer, mask_prob=0.99)(examples, generator=torch.Generator().manual_seed(1))
    padding = batch["attention_mask"] == 0
    assert padding.any()
    assert (batch["labels"][padding] == IGNORE_INDEX).all()
    assert (batch["input_ids"][padding] == tokenizer.pad_token_id).all()


def test_whole_word_masking_masks_whole_words_and_keeps_ratios(packed):
    tokenizer, examples = packed
    batch, original, special, chosen = _masking_stats(tokenizer, examples, whole_word_mask=True)
    starts = torch.tensor([e["word_starts"] for e in examples])
    word = starts.cumsum(1)
    # Every token of a word shares the decision of the word's first token.
    continuation = (starts == 0) & ~special
    previous_chosen = torch.roll(chosen, 1, dims=1)
    assert torch.equal(chosen[continuation], previous_chosen[continuation])
    assert (word[:, 1:] >= word[:, :-1]).all()
    assert abs(chosen.sum().item() / (~special).sum().item() - 0.15) < 0.01
    masked = (batch["input_ids"][chosen] == tokenizer.mask_token_id).float().mean().item()
    assert abs(masked - 0.8) < 0.015


def test_same_seed_same_masks(packed):
    tokenizer, examples = packed
    collate = MLMCollator(tokenizer)
    a = collate(examples[:8], generator=torch.Generator().manual_seed(3))
    b = collate(examples[:8], generator=torch.Generator().manual_seed(3))
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])


def test_tokenizer_without_mask_token_is_rejected():
    from nlpssl.data.tokenizer import train_tokenizer

    bpe = train_tokenizer(["a small corpus of words"] * 20, kind="bpe", vocab_size=300)
    with pytest.raises(UserError, match="no mask token"):
        MLMCollator(bpe)
