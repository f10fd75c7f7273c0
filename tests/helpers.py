"""Small builders shared by tests: a tiny corpus, tokenizer and BERT."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

from nlpssl.data.corpus import load_corpus
from nlpssl.data.tokenizer import train_tokenizer
from nlpssl.models.text import EncoderDims

datasets.disable_progress_bars()

TINY_DIMS = EncoderDims(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=128)
TINY_OVERRIDES = [
    "--model.hidden_size=32", "--model.num_layers=1", "--model.num_heads=2", "--model.intermediate_size=64",
    "--tokenizer.vocab_size=500", "--data.block_size=32", "--train.batch_size=4",
]


def bible_subset(documents: int = 120) -> datasets.Dataset:
    """The first ``documents`` chapters of the built-in corpus."""
    return load_corpus("bible-web").select(range(documents))


def tiny_wordpiece(texts) -> object:
    return train_tokenizer(texts, kind="wordpiece", vocab_size=500, model_max_length=128)


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(output_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(output_dir) if "loss" in r]
