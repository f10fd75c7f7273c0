"""Sentence tuples for contrastive training: single sentences, (anchor, positive[, negative]).

Unsupervised SimCSE reads one column and sees each sentence twice (dropout is
the augmentation); supervised SimCSE reads an anchor, a positive and an
optional hard negative. Sentences are tokenized in the collator: they are short,
and the fast tokenizer handles a batch in well under a millisecond per row.

Shapes: B batch, V views (columns), L length.
"""

from __future__ import annotations

import re
from typing import Sequence

import datasets
import torch
import torch.nn.functional as F

from nlpssl.data.corpus import check_text_column, load_corpus, load_table
from nlpssl.errors import UserError

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'A-Z0-9])")


def split_sentences(corpus: datasets.Dataset, min_words: int = 4) -> datasets.Dataset:
    """One row per sentence of each document (split after . ! ? before a capital), short ones dropped."""

    def split(batch: dict) -> dict:
        sentences = [s.strip() for text in batch["text"] for s in _SENTENCE_END.split(text)]
        return {"text": [s for s in sentences if len(s.split()) >= min_words]}

    return corpus.map(split, batched=True, desc="Splitting sentences")


def load_sentence_tuples(source: str, columns: Sequence[str], txt_mode: str = "line") -> datasets.Dataset:
    """Load a table with the given text ``columns`` (in that order) and check every cell.

    A plain text file gives one column, ``text``. Raises a one-line
    :class:`UserError` for a missing column (listing the ones that exist) or an
    empty sentence (naming the row).

    Example::

        triples = load_sentence_tuples("nli.csv", ["sent0", "sent1", "hard_neg"])
    """
    if len(columns) == 1:
        table = load_corpus(source, columns[0], txt_mode)  # drops empty rows itself
        return table.rename_column("text", columns[0]) if columns[0] != "text" else table
    table = load_table(source, txt_mode)
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise UserError(
            f"{source} has no column '{missing[0]}'; its columns are {', '.join(table.column_names)} "
            f"(set the data.*_column keys)"
        )
    table = table.select_columns(list(columns))
    for column in columns:
        check_text_column(table, column, source, "the data.*_column keys")
        empty = [i for i, text in enumerate(table[column]) if not (isinstance(text, str) and text.strip())]
        if empty:
            raise UserError(
                f"{source}: {len(empty)} empty sentence(s) in column '{column}', first at data row {empty[0] + 1}; "
                f"remove those rows"
            )
    return table


class SentenceViewsCollator:
    """Tokenize the ``columns`` of each row and stack them view-major into one (V*B, L) batch.

    With ``repeat`` > 1 (unsupervised SimCSE) a single column is repeated, so
    each sentence passes through the encoder ``repeat`` times with different
    dropout masks. Rows of view v are ``v*B .. v*B + B - 1``.

    ``pad_to_multiple_of`` rounds L up (8 under mixed precision).

    Example::

        collate = SentenceViewsCollator(tokenizer, ["text"], repeat=2)
        batch = collate([{"text": "a cat sat."}, {"text": "dogs run."}])  # input_ids (4, L)
    """

    def __init__(
        self, tokenizer, columns: Sequence[str], repeat: int = 1, max_length: int = 32, pad_to_multiple_of: int | None = None,
    ) -> None:
        if repeat > 1 and len(columns) != 1:
            raise ValueError("repeat applies to a single column")
        if tokenizer.pad_token_id is None:
            raise UserError("the tokenizer has no padding token; sentence batches need one (use an encoder checkpoint such as BERT)")
        self.tokenizer, self.columns, self.repeat, self.max_length = tokenizer, list(columns), repeat, max_length
        self.pad_to_multiple_of = pad_to_multiple_of  # 8 under mixed precision: tensor cores take multiples of 8

    @property
    def num_views(self) -> int:
        return len(self.columns) * self.repeat

    def __call__(self, rows: Sequence[dict], generator: torch.Generator | None = None) -> dict:
        texts = [row[column] for _ in range(self.repeat) for column in self.columns for row in rows]  # V*B
        encoded = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        input_ids, attention_mask = encoded["input_ids"], encoded["attention_mask"]  # (V*B, L)
        if self.pad_to_multiple_of:
            # Rounded up here: the tokenizer refuses a max_length that is not a multiple of pad_to_multiple_of.
            extra = -input_ids.shape[1] % self.pad_to_multiple_of
            sides = (extra, 0) if self.tokenizer.padding_side == "left" else (0, extra)
            input_ids = F.pad(input_ids, sides, value=self.tokenizer.pad_token_id)
            attention_mask = F.pad(attention_mask, sides, value=0)
        return {"input_ids": input_ids, "attention_mask": attention_mask}
