"""Train WordPiece / byte-level BPE tokenizers with `tokenizers`; load any HF tokenizer.

A trained tokenizer is saved as a folder that ``AutoTokenizer.from_pretrained``
loads, so checkpoints carry it and other tools read it. Training is
deterministic: the same texts and settings give the same vocabulary and ids in
every process and on every machine (WordPiece needs help for that, see
``_train_wordpiece``). A run's trained tokenizer records what it was trained
from (:func:`save_trained_tokenizer`), so a run that reuses it can check that
the settings and the corpus are still the same (:func:`check_trained_from`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Literal

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from nlpssl.atomic import atomic_folder
from nlpssl.errors import UserError, first_line
from nlpssl.sources import local_path

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model")
BERT_SPECIALS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
GPT_EOS = "<|endoftext|>"
TRAINED_FROM_FILE = "nlpssl_trained_from.json"  # beside a run's trained tokenizer: its settings and corpus fingerprint


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
    # `tokenizers` numbers the continuation pieces ("##a") in hash order, and ties between equally
    # frequent merges break by those numbers: two trainings on one corpus would differ. A first pass
    # without merges finds the continuation pieces; the real training gets them, sorted, as known
    # tokens (numbered before any merge), so every training gives the same vocabulary and ids.
    texts = texts if iter(texts) is not texts else list(texts)
    continuations = sorted(t for t in _wordpiece_trained(texts, 1, lowercase, min_frequency, []).get_vocab() if t.startswith("##"))
    trained = _wordpiece_trained(texts, vocab_size, lowercase, min_frequency, continuations)
    tokenizer = _bert_tokenizer(models.WordPiece(trained.get_vocab(with_added_tokens=False), unk_token=BERT_SPECIALS["unk_token"]), lowercase)
    tokenizer.add_special_tokens(list(BERT_SPECIALS.values()))  # the continuation pieces stay ordinary vocabulary
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, model_max_length=model_max_length, **BERT_SPECIALS)


def _wordpiece_trained(texts, vocab_size, lowercase, min_frequency, known: list[str]) -> Tokenizer:
    """A WordPiece trained on ``texts``; ``known`` tokens are numbered right after the special ones."""
    tokenizer = _bert_tokenizer(models.WordPiece(unk_token=BERT_SPECIALS["unk_token"]), lowercase)
    specials = list(BERT_SPECIALS.values()) + known
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials)
    tokenizer.train_from_iterator(_non_empty(texts), trainer)
    return tokenizer


def _bert_tokenizer(model, lowercase: bool) -> Tokenizer:
    """``model`` with BERT's normaliser, pre-tokenizer and decoder."""
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    return tokenizer


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


def corpus_fingerprint(texts: Iterable[str]) -> str:
    """A hex digest of ``texts`` in order: equal for the same documents in the same order, different otherwise."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass") + b"\0")
    return digest.hexdigest()[:32]


def save_trained_tokenizer(tokenizer, folder: str | Path, trained_from: dict) -> None:
    """Save ``tokenizer`` to ``folder`` with ``trained_from`` (settings, corpus fingerprint) beside it, all or nothing.

    Example::

        save_trained_tokenizer(tokenizer, run / "tokenizer", {"vocab_size": 8000, "corpus": corpus_fingerprint(texts)})
    """
    with atomic_folder(folder) as partial:
        tokenizer.save_pretrained(partial)
        (partial / TRAINED_FROM_FILE).write_text(json.dumps(trained_from, indent=2, sort_keys=True) + "\n")


def check_trained_from(folder: str | Path, trained_from: dict) -> None:
    """Refuse, in one line, to reuse the tokenizer in ``folder`` when it was trained from other settings or another corpus.

    A folder without the record (written before nlpssl kept one) is reused with a notice.
    """
    record = Path(folder) / TRAINED_FROM_FILE
    if not record.is_file():
        print(f"nlpssl: {folder} does not record what it was trained from; reusing it unchecked")
        return
    saved = json.loads(record.read_text())
    differing = [key for key in sorted(set(saved) | set(trained_from)) if saved.get(key) != trained_from.get(key)]
    if differing:
        changes = ", ".join(
            "the training corpus" if key == "corpus" else f"{key} {saved.get(key)} -> {trained_from.get(key)}" for key in differing
        )
        raise UserError(
            f"{folder} holds a tokenizer this run would not train ({changes}); "
            f"use a new train.output_dir or --train.overwrite=true"
        )


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
