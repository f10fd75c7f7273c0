import math

import pytest
import torch
from transformers import DataCollatorForLanguageModeling

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
    starts = torch.tensor([e["word_starts"] for e in examples]).bool()
    # Every token of a word shares the decision of the word's first token.
    continuation = ~starts & ~special
    previous_chosen = torch.roll(chosen, 1, dims=1)
    assert torch.equal(chosen[continuation], previous_chosen[continuation])
    assert (chosen & continuation).sum() > 1000, "words of several tokens must be chosen, or the check above is vacuous"
    # The control: token-level masking splits words, so the same check fails on it.
    _, _, _, per_token = _masking_stats(tokenizer, examples)
    assert not torch.equal(per_token[continuation], torch.roll(per_token, 1, dims=1)[continuation])
    # 15% of words are chosen (not of tokens: a long word is no likelier to be picked than a short one).
    words = starts & ~special
    word_rate, n_words = chosen[words].float().mean().item(), words.sum().item()
    assert abs(word_rate - 0.15) < 4 * math.sqrt(0.15 * 0.85 / n_words)
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


def _corruption_counts(input_ids: torch.Tensor, labels: torch.Tensor, original: torch.Tensor, mask_id: int) -> dict[str, int]:
    """How many positions were chosen, and how many of those became [MASK], a different token, or stayed."""
    chosen = labels != IGNORE_INDEX
    became_mask = chosen & (input_ids == mask_id)
    kept = chosen & (input_ids == original)
    return {"chosen": int(chosen.sum()), "mask": int(became_mask.sum()), "kept": int(kept.sum()),
            "random": int((chosen & ~became_mask & ~kept).sum())}


def _binomial_parity(ours: int, ours_n: int, theirs: int, theirs_n: int, expected: float) -> None:
    """Both proportions within 4 standard errors of ``expected``, and of each other (SE of a difference)."""
    p_ours, p_theirs = ours / ours_n, theirs / theirs_n
    se_ours, se_theirs = (math.sqrt(expected * (1 - expected) / n) for n in (ours_n, theirs_n))
    assert abs(p_ours - expected) < 4 * se_ours, (p_ours, expected)
    assert abs(p_theirs - expected) < 4 * se_theirs, (p_theirs, expected)
    assert abs(p_ours - p_theirs) < 4 * math.hypot(se_ours, se_theirs), (p_ours, p_theirs)


def test_statistics_match_transformers_data_collator(packed):
    """Parity with DataCollatorForLanguageModeling on the same 128k tokens: masked share, 80/10/10, specials untouched.

    Tolerances are 4 binomial standard errors: each side against the nominal
    share (about 0.004 for the 15% of ~126k candidates, 0.012 / 0.009 for the 80% /
    10% of ~19k chosen), and the two sides against each other (x sqrt 2: 0.006,
    0.017, 0.013). transformers draws random replacements from the whole
    vocabulary (specials included) and ours from the non-special ids; a draw equal
    to the original counts as "kept" on both sides, 1 in 500 of the 10% here, far
    inside the tolerance.
    """
    tokenizer, examples = packed
    rows = [{"input_ids": e["input_ids"], "special_tokens_mask": e["special_tokens_mask"]} for e in examples]
    original = torch.tensor([e["input_ids"] for e in examples])  # (B, L)
    special = torch.tensor([e["special_tokens_mask"] for e in examples]).bool()  # (B, L)
    candidates = int((~special).sum())
    ours = MLMCollator(tokenizer, mask_prob=0.15, mask_token_frac=0.8, random_token_frac=0.1)(rows, generator=torch.Generator().manual_seed(0))
    reference = DataCollatorForLanguageModeling(
        tokenizer, mlm_probability=0.15, mask_replace_prob=0.8, random_replace_prob=0.1, seed=1, return_tensors="pt"
    )
    theirs = reference([dict(row) for row in rows])  # it pops special_tokens_mask from the rows it is given
    assert theirs["input_ids"].shape == ours["input_ids"].shape == original.shape
    for batch in (ours, theirs):  # special tokens are never chosen nor changed
        assert (batch["labels"][special] == IGNORE_INDEX).all()
        assert torch.equal(batch["input_ids"][special], original[special])
        chosen = batch["labels"] != IGNORE_INDEX
        assert torch.equal(batch["labels"][chosen], original[chosen])
    mask_id = tokenizer.mask_token_id
    counts_ours = _corruption_counts(ours["input_ids"], ours["labels"], original, mask_id)
    counts_theirs = _corruption_counts(theirs["input_ids"], theirs["labels"], original, mask_id)
    # Seeds differ on purpose: with one seed both draw the same positions (uniform < p), which would hide a biased sampler.
    assert not torch.equal(ours["labels"], theirs["labels"]), "two independent samples are compared"
    _binomial_parity(counts_ours["chosen"], candidates, counts_theirs["chosen"], candidates, 0.15)
    for outcome, share in (("mask", 0.8), ("random", 0.1), ("kept", 0.1)):
        _binomial_parity(counts_ours[outcome], counts_ours["chosen"], counts_theirs[outcome], counts_theirs["chosen"], share)
