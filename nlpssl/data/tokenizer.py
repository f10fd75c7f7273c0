"""Train WordPiece / byte-level BPE tokenizers with `tokenizers`; load any HF tokenizer.

A trained tokenizer is saved as a folder that ``AutoTokenizer.from_pretrained``
loads, so checkpoints carry it and other tools read it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from nlpssl.errors import UserError, first_line
from nlpssl.sources import local_path

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
BERT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
GPT_EOS = "<|endoftext|>"


def train_tokenizer(
    texts: Iterable[str],
    kind: Literal["wordpiece", "bpe"] = "wordpiece",
    vocab_size: int = 8000,
    lowercase: bool = True,
    min_frequency: int = 2,
    model_max_length: int = 512,
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on ``texts`` and wrap it as a Hugging Face fast tokenizer.

    ``wordpiece`` gives a BERT tokenizer ([CLS] x [SEP], [MASK], [PAD]);
    ``bpe`` gives a GPT-2 style byte-level BPE whose pad, bos and eos are
    ``<|endoftext|>``.

    Example::

        tokenizer = train_tokenizer(corpus["text"], kind="wordpiece", vocab_size=8000)
        tokenizer.save_pretrained("outputs/tokenizer")
    """
    if kind == "wordpiece":
        return _train_wordpiece(texts, vocab_size, lowercase, min_frequency, model_max_length)
    if kind == "bpe":
        return _train_bpe(texts, vocab_size, min_frequency, model_max_length)
    raise UserError(f"tokenizer kind '{kind}' is unknown; use wordpiece or bpe")


def _train_wordpiece(texts, vocab_size, lowercase, min_frequency, model_max_length) -> PreTrainedTokenizerFast:
    specials = list(BERT_SPECIALS.values())
    tokenizer = Tokenizer(models.WordPiece(unk_token=BERT_SPECIALS["unk_token"]))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials)
    tokenizer.train_from_iterator(_non_empty(texts), trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **BERT_SPECIALS)


def _train_bpe(texts, vocab_size, min_frequency, model_max_length) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[GPT_EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(_non_empty(texts), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        model_max_length=model_max_length,
        bos_token=GPT_EOS,
        eos_token=GPT_EOS,
        unk_token=GPT_EOS,
        pad_token=GPT_EOS,
    )


def _non_empty(texts: Iterable[str]) -> Iterable[str]:
    seen = 0
    for text in texts:
        if text and text.strip():
            seen += 1
            yield text
    if seen == 0:
        raise UserError("cannot train a tokenizer on an empty corpus; check data.corpus and data.text_column")


def load_tokenizer(name_or_path: str | Path, require_fast: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer from a local folder (or a hub name when online), with a clear error.

    Example::

        tokenizer = load_tokenizer("outputs/mlm/final")
    """
    path = local_path(name_or_path)
    if path is not None and not path.is_dir():
        raise UserError(f"tokenizer folder {path} not found; train one with scripts/train_tokenizer.py")
    if path is not None and not any((path / name).is_file() for name in TOKENIZER_FILES):
        # transformers 5 would otherwise build an empty tokenizer that maps every word to [UNK].
        raise UserError(f"{path} has no tokenizer ({', '.join(TOKENIZER_FILES)}); save the tokenizer with the model")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path) if path is not None else str(name_or_path))
    except (OSError, ValueError) as error:
        where = f"folder {path}" if path is not None else f"'{name_or_path}' (offline? hub names need a network)"
        raise UserError(f"no tokenizer could be loaded from {where}: {first_line(error)}") from None
    if require_fast and not tokenizer.is_fast:
        raise UserError(f"tokenizer at {name_or_path} is not a fast tokenizer; whole-word masking needs word ids")
    return tokenizer
