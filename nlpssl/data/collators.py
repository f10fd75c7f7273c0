"""Batch collators. Each takes a list of examples and an optional seeded generator.

The training loop seeds one generator per batch from (seed, step, rank), so
masking is reproducible and resumes exactly.

Shapes: B batch, L length, V vocab.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from transformers import PreTrainedTokenizerBase

from nlpssl.errors import UserError

IGNORE_INDEX = -100


def pad_column(examples: Sequence[dict], key: str, value: int, multiple_of: int | None = None) -> torch.Tensor:
    """Stack ``examples[i][key]`` (ragged int lists) into (B, L), right-padded with ``value``."""
    rows = [example[key] for example in examples]
    length = max(len(row) for row in rows)
    if multiple_of:
        length = -(-length // multiple_of) * multiple_of
    if all(len(row) == length for row in rows):
        return torch.tensor(rows, dtype=torch.long)
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def length_mask(examples: Sequence[dict], length: int) -> torch.Tensor:
    """(B, L) 1 at each row's real tokens (its ``input_ids`` length), 0 at right padding up to ``length``."""
    lengths = torch.tensor([len(example["input_ids"]) for example in examples])  # (B,)
    return (torch.arange(length) < lengths[:, None]).long()


class MLMCollator:
    """BERT masking: pick ``mask_prob`` of tokens; of those, ``mask_token_frac`` become [MASK],
    ``random_token_frac`` a random non-special token, and the rest stay unchanged.

    Devlin et al. 2019. With ``whole_word_mask`` whole words are picked (every
    token of a chosen word) and 80/10/10 applies to each of their tokens.
    Special and padding tokens are never picked; labels are -100 elsewhere.

    Examples need ``input_ids``; ``special_tokens_mask`` (from packing) is used
    when present, and ``word_starts`` is required for whole-word masking.

    Example::

        collate = MLMCollator(tokenizer, mask_prob=0.15)
        batch = collate(blocks[:32], generator=torch.Generator().manual_seed(0))
        batch["input_ids"], batch["labels"]  # (B, L) each
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        mask_prob: float = 0.15,
        mask_token_frac: float = 0.8,
        random_token_frac: float = 0.1,
        whole_word_mask: bool = False,
        pad_to_multiple_of: int | None = None,
    ) -> None:
        if tokenizer.mask_token_id is None:
            raise UserError("the tokenizer has no mask token; masked LM needs one (train a wordpiece tokenizer)")
        if not 0.0 < mask_prob < 1.0:
            raise UserError(f"mlm.mask_prob={mask_prob} must lie strictly between 0 and 1 (BERT uses 0.15)")
        if not (0.0 <= mask_token_frac <= 1.0 and 0.0 <= random_token_frac <= 1.0 and mask_token_frac + random_token_frac <= 1.0):
            raise UserError(
                f"mlm.mask_token_frac={mask_token_frac} and mlm.random_token_frac={random_token_frac} must each lie "
                f"between 0 and 1, with a sum of at most 1 (BERT uses 0.8 and 0.1)"
            )
        self.tokenizer = tokenizer
        self.mask_prob = mask_prob
        self.mask_token_frac = mask_token_frac
        self.random_token_frac = random_token_frac
        self.whole_word_mask = whole_word_mask
        self.pad_to_multiple_of = pad_to_multiple_of
        special_ids = set(tokenizer.all_special_ids)
        self.replacement_ids = torch.tensor([i for i in range(len(tokenizer)) if i not in special_ids], dtype=torch.long)  # (V',)
        if len(self.replacement_ids) == 0:
            raise UserError("the tokenizer has only special tokens; masked LM needs a vocabulary of words (train a larger one)")

    def __call__(self, examples: Sequence[dict], generator: torch.Generator | None = None) -> dict[str, Any]:
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        input_ids = pad_column(examples, "input_ids", pad_id, self.pad_to_multiple_of)  # (B, L)
        attention_mask = length_mask(examples, input_ids.shape[1])  # (B, L)
        special = self._special_mask(examples, input_ids) | (attention_mask == 0)  # (B, L) bool
        chosen = self._choose(examples, special, generator)  # (B, L) bool
        input_ids, labels = self._corrupt(input_ids, chosen, generator)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    def _special_mask(self, examples: Sequence[dict], input_ids: torch.Tensor) -> torch.Tensor:
        if "special_tokens_mask" in examples[0]:
            return pad_column(examples, "special_tokens_mask", 1, self.pad_to_multiple_of).bool()
        special_ids = torch.tensor(self.tokenizer.all_special_ids)
        return torch.isin(input_ids, special_ids)

    def _choose(self, examples: Sequence[dict], special: torch.Tensor, generator) -> torch.Tensor:
        noise = torch.rand(special.shape, generator=generator)  # (B, L)
        if self.whole_word_mask:
            if "word_starts" not in examples[0]:
                raise UserError("whole-word masking needs 'word_starts' in the examples (pack with tokenize_and_pack)")
            starts = pad_column(examples, "word_starts", 1, self.pad_to_multiple_of)  # (B, L)
            starts[:, :1] = 1  # a word cut by the start of the row is a word of this row (as packing marks it)
            word_index = starts.cumsum(dim=1) - 1  # (B, L): which word each token belongs to
            noise = noise.gather(1, word_index)  # every token of a word shares its word's draw
        return (noise < self.mask_prob) & ~special

    def _corrupt(self, input_ids: torch.Tensor, chosen: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))  # (B, L)
        action = torch.rand(input_ids.shape, generator=generator)  # (B, L)
        to_mask = chosen & (action < self.mask_token_frac)
        to_random = chosen & (action >= self.mask_token_frac) & (action < self.mask_token_frac + self.random_token_frac)
        draws = torch.randint(len(self.replacement_ids), input_ids.shape, generator=generator)
        corrupted = torch.where(to_mask, torch.full_like(input_ids, self.tokenizer.mask_token_id), input_ids)
        corrupted = torch.where(to_random, self.replacement_ids[draws], corrupted)
        return corrupted, labels


class CausalLMCollator:
    """Right-pad rows for next-token prediction; every real token is a target, padding never is.

    The attention mask comes from the row lengths, not from the token ids: GPT-2
    style tokenizers pad with their end-of-text token, and an end-of-text that
    ends a document must stay a target. Labels are the input ids, unshifted
    (the causal shift happens once, in :class:`~nlpssl.objectives.clm.CausalLM`),
    with -100 at padded positions only. Deterministic, so ``generator`` is unused.

    Example::

        collate = CausalLMCollator(tokenizer)
        batch = collate([{"input_ids": [5, 6, 0]}, {"input_ids": [7]}])
        batch["labels"]  # tensor([[5, 6, 0], [7, -100, -100]])
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None) -> None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise UserError("the tokenizer has neither a pad nor an eos token; causal LM needs one to pad batches")
        self.pad_id = pad_id
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict], generator: torch.Generator | None = None) -> dict[str, Any]:
        input_ids = pad_column(examples, "input_ids", self.pad_id, self.pad_to_multiple_of)  # (B, L)
        attention_mask = length_mask(examples, input_ids.shape[1])  # (B, L)
        labels = input_ids.masked_fill(attention_mask == 0, IGNORE_INDEX)  # (B, L)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class ClassificationCollator:
    """Pad tokenized rows to the batch's own longest row (dynamic padding) for sequence classification.

    Rows hold ``input_ids`` (and ``token_type_ids`` for sentence pairs) unpadded,
    and ``labels``: a class id, or a float score for regression. Padding to the
    batch, not to a fixed ``max_length``, is most of the speed of fine-tuning on
    short sentences. Deterministic, so ``generator`` is unused.

    Example::

        collate = ClassificationCollator(tokenizer)
        batch = collate([{"input_ids": [2, 7, 3], "labels": 1}, {"input_ids": [2, 3], "labels": 0}])
        batch["input_ids"].shape, batch["labels"]  # (2, 3), tensor([1, 0])
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int | None = None) -> None:
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict], generator: torch.Generator | None = None) -> dict[str, Any]:
        input_ids = pad_column(examples, "input_ids", self.pad_id, self.pad_to_multiple_of)  # (B, L)
        batch = {"input_ids": input_ids, "attention_mask": length_mask(examples, input_ids.shape[1])}  # (B, L) each
        if "token_type_ids" in examples[0]:
            batch["token_type_ids"] = pad_column(examples, "token_type_ids", 0, self.pad_to_multiple_of)  # (B, L)
        if "labels" in examples[0]:
            batch["labels"] = torch.tensor([e["labels"] for e in examples])  # (B,) long ids or float scores
        return batch
