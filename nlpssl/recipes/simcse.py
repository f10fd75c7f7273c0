"""The SimCSE recipe: its config sections, training rows, encoder and STS-B dev selection."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import datasets

from nlpssl.data.corpus import load_corpus
from nlpssl.data.tokenizer import load_tokenizer
from nlpssl.errors import UserError
from nlpssl.recipes.common import MINILM, resolve_checkpoint
from nlpssl.train import TrainConfig


@dataclass
class SentenceDataConfig:
    """Sentences (unsupervised) or (anchor, positive[, hard negative]) rows (supervised)."""

    train: str = "bible-web"
    sentence_column: str = "text"
    positive_column: str | None = None  # set for supervised SimCSE
    negative_column: str | None = None
    split_sentences: bool = True  # cut documents into sentences (unsupervised only)
    max_sentences: int | None = None  # a seeded random subset
    max_length: int = 32


@dataclass
class SentenceModelConfig:
    checkpoint: str = MINILM  # a local folder, "minilm", or a hub name when online
    pooler: Literal["cls", "cls_before_pooler", "mean"] = "mean"


@dataclass
class SimCSEConfig:
    temperature: float = 0.05
    gather: bool = True  # negatives from every process
    stsb_dir: str | None = "auto"  # data for model selection: auto = ../shared/data (stsb/, wikitext2/) when present; none = off
    select_on: Literal["stsb_dev", "stsb_dev+longtext_dev"] = "stsb_dev"  # the dev score best/ is chosen by
    longtext_max_length: int = 256  # tokens per paragraph in the long-text check


@dataclass
class SimCSERecipe:
    data: SentenceDataConfig = field(default_factory=SentenceDataConfig)
    model: SentenceModelConfig = field(default_factory=SentenceModelConfig)
    simcse: SimCSEConfig = field(default_factory=SimCSEConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="outputs/simcse"))


def load_simcse_data(data: SentenceDataConfig, train: TrainConfig) -> tuple[datasets.Dataset, list[str]]:
    """The training rows and the columns that make up each row's views."""
    from nlpssl.data.pairs import load_sentence_tuples, split_sentences

    if data.negative_column and not data.positive_column:
        raise UserError("data.negative_column needs data.positive_column (supervised SimCSE)")
    columns = [c for c in (data.sentence_column, data.positive_column, data.negative_column) if c]
    if len(columns) == 1 and data.split_sentences:
        columns = ["text"]  # documents cut into sentences: the column is split_sentences' own
        table = split_sentences(load_corpus(data.train, data.sentence_column))
    else:
        table = load_sentence_tuples(data.train, columns)
    if data.max_sentences and len(table) > data.max_sentences:
        table = table.shuffle(seed=train.seed).select(range(data.max_sentences))
    if train.batch_size < 2:
        raise UserError("train.batch_size must be at least 2: SimCSE needs other sentences in the batch as negatives")
    print(f"nlpssl: {len(table):,} training rows with views {', '.join(columns)}")
    return table, columns


def row_lengths(table: datasets.Dataset, columns: list[str]) -> list[int]:
    """Characters of each row's longest view: a cheap proxy of its padded token length."""
    return [max(len(row[c]) for c in columns) for row in table.select_columns(columns)]


#: the dropout SimCSE trains with (the paper's, BERT's) when the start model has none
SIMCSE_DROPOUT = 0.1


def load_simcse_encoder(model: SentenceModelConfig):
    """Encoder (AutoModel), its tokenizer, and the SimCSE pooler; a model saved without dropout gets :data:`SIMCSE_DROPOUT`."""
    from transformers import AutoConfig, AutoModel

    from nlpssl.models.heads import SentencePooler
    from nlpssl.models.text import check_vocab_fits, dropout_restored, load_pretrained

    checkpoint = resolve_checkpoint(model.checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    dropout = dropout_restored(load_pretrained(AutoConfig, checkpoint), SIMCSE_DROPOUT)
    if dropout:
        print(f"nlpssl: {model.checkpoint} was saved without dropout; SimCSE trains it with {SIMCSE_DROPOUT} (its views differ by dropout)")
    encoder = load_pretrained(AutoModel, checkpoint, **dropout)
    check_vocab_fits(encoder, tokenizer)
    # BERT's own pooler is not in the loss (SimCSE trains its own MLP): freeze it, so
    # DistributedDataParallel sees no unused trainable parameter, and keep it in the export.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler.requires_grad_(False)
    pooler = SentencePooler(model.pooler, hidden_size=encoder.config.hidden_size)
    return encoder, tokenizer, pooler


def dev_metrics(simcse: SimCSEConfig, tokenizer):
    """objective -> the dev scores to log and select on, or None when there is no STS-B.

    ``stsb_dev`` (Spearman x100); with ``wikitext2/`` beside ``stsb/``, also
    ``longtext_dev`` (same-article paragraph retrieval MRR x100 on WikiText-2
    valid, :mod:`nlpssl.evaluation.long_text`); ``select_on`` "stsb_dev+longtext_dev"
    adds their mean as ``dev_mean``, which then selects ``best/``.
    """
    from nlpssl.data.sts import default_data_dir
    from nlpssl.evaluation.long_text import evaluate_long_text

    stsb = stsb_dev_metric(simcse.stsb_dir, tokenizer)
    if stsb is None:
        if simcse.select_on != "stsb_dev":
            raise UserError(f"simcse.select_on={simcse.select_on} needs STS-B and WikiText-2; set simcse.stsb_dir to the folder holding them")
        return None
    root = default_data_dir() if simcse.stsb_dir == "auto" else Path(simcse.stsb_dir)
    if not (root / "wikitext2").is_dir():
        if simcse.select_on != "stsb_dev":
            raise UserError(f"simcse.select_on={simcse.select_on} needs {root / 'wikitext2'}; set simcse.select_on=stsb_dev")
        return stsb

    def compute(objective) -> dict:
        scores = stsb(objective)
        scores["longtext_dev"] = evaluate_long_text(
            objective.encoder, tokenizer, root / "wikitext2", "dev", objective.embed, max_length=simcse.longtext_max_length,
        )["mrr"]
        if simcse.select_on == "stsb_dev+longtext_dev":
            scores["dev_mean"] = (scores["stsb_dev"] + scores["longtext_dev"]) / 2
        return scores

    return compute


def selection_key(simcse: SimCSEConfig) -> str:
    """The logged score that selects ``best/``."""
    return "stsb_dev" if simcse.select_on == "stsb_dev" else "dev_mean"


def stsb_dev_metric(stsb_dir: str | None, tokenizer):
    """objective -> {"stsb_dev": Spearman x100} on STS-B dev, or None when the data is absent."""
    from nlpssl.data.sts import default_data_dir, read_stsb
    from nlpssl.evaluation.sts import score_pairs

    if stsb_dir is None:
        return None
    root = default_data_dir() if stsb_dir == "auto" else Path(stsb_dir)
    if not (root / "stsb").is_dir():
        if stsb_dir != "auto":
            raise UserError(f"simcse.stsb_dir={stsb_dir} has no stsb/ folder")
        return None
    pairs = read_stsb(root, "dev")
    return lambda objective: {"stsb_dev": score_pairs(objective.encoder, tokenizer, pairs, objective.embed)}
