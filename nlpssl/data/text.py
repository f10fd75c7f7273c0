"""Tokenize documents with `datasets.map` (cached, multi-process) and pack them into blocks.

Packed blocks are what MLM and causal-LM pretraining train on:

* ``bert`` style: ``[CLS] doc_a [SEP] doc_b ... [SEP]``: each block opens with
  the classifier token and closes with the separator; documents inside a block
  are separated by [SEP].
* ``gpt`` style: ``doc_a <eos> doc_b <eos> ...`` cut into fixed-length blocks.

Each block carries ``special_tokens_mask`` (computed once, here, so masking can
never touch a special token) and ``word_starts`` (1 on the first token of each
word, from the fast tokenizer's word ids; used by whole-word masking).
The tail of each map batch shorter than a block is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import datasets
import numpy as np
import pyarrow.compute as pc
from transformers import PreTrainedTokenizerBase

from nlpssl.errors import UserError

PackStyle = Literal["bert", "gpt"]


@dataclass(frozen=True)
class PackStats:
    """How many tokens the corpus had, how many went into blocks, and how many were dropped."""

    documents: int
    tokens: int
    blocks: int
    block_size: int
    packed_tokens: int

    @property
    def dropped_tokens(self) -> int:
        return self.tokens - self.packed_tokens

    def summary(self) -> str:
        share = 100.0 * self.dropped_tokens / max(self.tokens, 1)
        return (
            f"{self.documents:,} documents, {self.tokens:,} tokens -> {self.blocks:,} blocks of "
            f"{self.block_size}; dropped {self.dropped_tokens:,} tokens ({share:.1f}%)"
        )


def tokenize_and_pack(
    corpus: datasets.Dataset,
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    style: PackStyle = "bert",
    num_proc: int | None = None,
) -> tuple[datasets.Dataset, PackStats]:
    """Tokenize a ``text`` corpus and pack it into ``block_size`` token blocks.

    Returns the packed dataset (columns ``input_ids``, ``special_tokens_mask``,
    ``word_starts``) and :class:`PackStats`.

    Example::

        blocks, stats = tokenize_and_pack(load_corpus("bible-web"), tokenizer, block_size=128)
        print(stats.summary())
    """
    separator = _separator_id(tokenizer, style)
    overhead = 2 if style == "bert" else 0
    if block_size <= overhead:
        raise UserError(f"data.block_size={block_size} is too small; use at least {overhead + 8}")
    tokenized = corpus.map(
        _tokenize_batch,
        fn_kwargs={"tokenizer": tokenizer},
        batched=True,
        remove_columns=corpus.column_names,
        num_proc=num_proc,
        desc="Tokenizing",
    )
    tokens = int(pc.sum(pc.list_value_length(tokenized.data.column("input_ids"))).as_py() or 0)
    packed = tokenized.map(
        _pack_batch,
        fn_kwargs=_pack_options(tokenizer, block_size, style, separator),
        batched=True,
        batch_size=1000,
        remove_columns=tokenized.column_names,
        num_proc=num_proc,
        desc=f"Packing into blocks of {block_size}",
    )
    stats = PackStats(len(corpus), tokens, len(packed), block_size, _packed_document_tokens(packed))
    if len(packed) == 0:
        raise UserError(
            f"the corpus has {tokens:,} tokens, fewer than one block of {block_size}; "
            f"use a larger corpus or a smaller --data.block_size"
        )
    return packed, stats


def _separator_id(tokenizer: PreTrainedTokenizerBase, style: PackStyle) -> int:
    if style == "bert":
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None:
            raise UserError("bert-style packing needs a tokenizer with [CLS] and [SEP] tokens")
        return tokenizer.sep_token_id
    if tokenizer.eos_token_id is None:
        raise UserError("gpt-style packing needs a tokenizer with an end-of-text (eos) token")
    return tokenizer.eos_token_id


def _tokenize_batch(batch: dict, tokenizer: PreTrainedTokenizerBase) -> dict:
    encoded = tokenizer(batch["text"], add_special_tokens=False, return_attention_mask=False, verbose=False)
    if not tokenizer.is_fast:
        return {"input_ids": encoded["input_ids"], "word_starts": [[1] * len(ids) for ids in encoded["input_ids"]]}
    word_starts = []
    for index in range(len(batch["text"])):
        word_ids = encoded.word_ids(index)
        word_starts.append([int(w is None or i == 0 or w != word_ids[i - 1]) for i, w in enumerate(word_ids)])
    return {"input_ids": encoded["input_ids"], "word_starts": word_starts}


def _pack_options(tokenizer, block_size: int, style: PackStyle, separator: int) -> dict:
    return {
        "block_size": block_size,
        "separator": separator,
        "cls": tokenizer.cls_token_id if style == "bert" else None,
    }


def _pack_batch(batch: dict, block_size: int, separator: int, cls: int | None) -> dict:
    """Concatenate documents with separators and cut the stream into blocks."""
    ids, starts, special = [], [], []
    for doc_ids, doc_starts in zip(batch["input_ids"], batch["word_starts"]):
        ids.extend(doc_ids + [separator])
        starts.extend(doc_starts + [1])
        special.extend([0] * len(doc_ids) + [1])
    content = block_size - (2 if cls is not None else 0)
    count = len(ids) // content
    if count == 0:
        return {"input_ids": [], "special_tokens_mask": [], "word_starts": []}
    shape = (count, content)
    ids_np = np.asarray(ids[: count * content], dtype=np.int64).reshape(shape)  # (N, C)
    starts_np = np.asarray(starts[: count * content], dtype=np.int8).reshape(shape)
    special_np = np.asarray(special[: count * content], dtype=np.int8).reshape(shape)
    starts_np[:, 0] = 1  # a word cut by the block boundary is a whole word of this block
    if cls is not None:
        ids_np = np.concatenate([np.full((count, 1), cls), ids_np, np.full((count, 1), separator)], axis=1)
        ones = np.ones((count, 1), dtype=np.int8)
        starts_np = np.concatenate([ones, starts_np, ones], axis=1)
        special_np = np.concatenate([ones, special_np, ones], axis=1)  # (N, L)
    return {"input_ids": ids_np.tolist(), "special_tokens_mask": special_np.tolist(), "word_starts": starts_np.tolist()}


def _packed_document_tokens(packed: datasets.Dataset) -> int:
    """Non-special tokens in the packed blocks (document tokens that made it in)."""
    if len(packed) == 0:
        return 0
    special = pc.sum(pc.list_flatten(packed.data.column("special_tokens_mask"))).as_py() or 0
    return len(packed) * len(packed[0]["input_ids"]) - int(special)
