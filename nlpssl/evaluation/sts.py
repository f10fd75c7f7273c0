"""Semantic textual similarity: embed scored pairs, report Spearman x100 of cosine vs gold.

Reporting protocol (shared/data/README.md, as SimCSE reports): Spearman x100
between the cosine similarity of the two embeddings and the gold score;
STS12-16 in the "all" setting (every subset of a year pooled into one
correlation); STS-B and SICK-R on their test splits. The pairs come from the
readers in :mod:`nlpssl.data.sts`.

Shapes: N sentences, D embedding width, P pairs, B batch, L length.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from tqdm.auto import tqdm
from transformers import AutoModel

from nlpssl.data.sts import AVG_TASKS, STS_TASKS, ScoredPair, load_task
from nlpssl.data.tokenizer import load_tokenizer
from nlpssl.errors import UserError
from nlpssl.models.heads import pool
from nlpssl.models.text import check_vocab_fits, load_pretrained

Pooling = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ENCODE_POOLING = ("cls", "mean", "pooler")


def encode(
    model: torch.nn.Module,
    tokenizer,
    sentences: Sequence[str],
    pooling: Pooling = "mean",
    batch_size: int = 64,
    max_length: int = 128,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Embed sentences with a Hugging Face encoder; returns (N, D) float32 on CPU, in input order.

    Sentences are batched longest first (little padding, and an out-of-memory
    error shows up on the first batch), under ``torch.inference_mode`` and in
    eval mode (the model's train/eval mode is restored afterwards).

    Args:
        model: an encoder whose output has ``last_hidden_state`` (e.g. ``AutoModel``).
        tokenizer: its tokenizer.
        sentences: N strings.
        pooling: "mean" (over real tokens), "cls" (position 0), "pooler" (the
            model's ``pooler_output``), or a function (B, L, D) states, (B, L) mask -> (B, D),
            e.g. ``SentencePooler.embed``.
        device: defaults to the model's device.

    Example::

        model, tokenizer = AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path)
        vectors = encode(model, tokenizer, ["A man is eating.", "A man eats food."])  # (2, D)
    """
    if not callable(pooling) and pooling not in ENCODE_POOLING:
        raise UserError(f"unknown pooling {pooling!r}; choose one of {', '.join(ENCODE_POOLING)}")
    if not sentences:
        raise UserError("encode got no sentences")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
    starts = range(0, len(order), batch_size)
    was_training, chunks = model.training, []
    model.eval()
    try:
        with torch.inference_mode():
            for start in tqdm(starts, desc="encode", leave=False, disable=not sys.stderr.isatty()):
                texts = [sentences[i] for i in order[start : start + batch_size]]
                batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
                chunks.append(_embed_batch(model, batch.to(device), pooling).float().cpu())  # (B, D)
    finally:
        model.train(was_training)
    embeddings = torch.cat(chunks)  # (N, D), longest first; built outside inference mode, so an ordinary tensor
    return embeddings[torch.argsort(torch.tensor(order))]  # (N, D), input order


def _embed_batch(model: torch.nn.Module, batch, pooling: Pooling) -> torch.Tensor:
    outputs = model(**batch)
    if pooling == "pooler":
        if getattr(outputs, "pooler_output", None) is None:
            raise UserError(f"{type(model).__name__} has no pooler output; use pooling 'cls' or 'mean'")
        return outputs.pooler_output  # (B, D)
    pool_fn = pooling if callable(pooling) else lambda hidden, mask: pool(hidden, mask, pooling)
    return pool_fn(outputs.last_hidden_state, batch["attention_mask"])  # (B, L, D) -> (B, D)


def spearman_cosine(emb1: torch.Tensor, emb2: torch.Tensor, gold: Sequence[float] | torch.Tensor) -> float:
    """Spearman x100 between the row-wise cosine of (P, D) ``emb1`` and ``emb2`` and (P,) gold scores.

    Example::

        spearman_cosine(encode(model, tok, s1), encode(model, tok, s2), scores)  # e.g. 82.03
    """
    cosine = F.cosine_similarity(emb1.double(), emb2.double(), dim=-1)  # (P,)
    return float(spearmanr(cosine.numpy(), torch.as_tensor(gold, dtype=torch.float64).numpy()).statistic * 100)


def score_pairs(model: torch.nn.Module, tokenizer, pairs: Sequence[ScoredPair], pooling: Pooling = "mean", **encode_kwargs) -> float:
    """Spearman x100 of cosine vs gold on ``pairs``; each distinct sentence is embedded once.

    Example::

        score_pairs(model, tokenizer, read_stsb(data_dir, "dev"), pooling="cls")
    """
    unique = list(dict.fromkeys(sentence for first, second, _ in pairs for sentence in (first, second)))
    position = {sentence: i for i, sentence in enumerate(unique)}
    embeddings = encode(model, tokenizer, unique, pooling, **encode_kwargs)  # (N, D)
    first = embeddings[[position[pair[0]] for pair in pairs]]  # (P, D)
    second = embeddings[[position[pair[1]] for pair in pairs]]  # (P, D)
    return spearman_cosine(first, second, [pair[2] for pair in pairs])


def evaluate_sts(
    model: torch.nn.Module,
    tokenizer,
    data_dir: str | Path,
    pooling: Pooling = "mean",
    tasks: Sequence[str] = STS_TASKS,
    **encode_kwargs,
) -> dict[str, float | None]:
    """Spearman x100 on each STS task, plus ``avg``.

    ``avg`` is the mean over SimCSE's seven tasks (STS12, STS13, STS14, STS15,
    STS16, STS-B test, SICK-R test); it is None unless all seven are in ``tasks``.
    STS-B dev is reported but never averaged (it is for model selection).

    Args:
        tasks: a subset of :data:`STS_TASKS` ("stsb_dev", "stsb_test", "sts12" .. "sts16", "sickr").
        encode_kwargs: ``batch_size``, ``max_length``, ``device`` for :func:`encode`.

    Example::

        results = evaluate_sts(model, tokenizer, "../shared/data", pooling="mean")
        results["stsb_test"], results["avg"]
    """
    if not Path(data_dir).is_dir():
        raise UserError(f"STS data folder {data_dir} not found; pass --data-dir or set NLPSSL_SHARED_DATA")
    unknown = [task for task in tasks if task not in STS_TASKS]
    if unknown:
        raise UserError(f"unknown STS task {', '.join(unknown)}; choose from {', '.join(STS_TASKS)}")
    results: dict[str, float | None] = {
        task: score_pairs(model, tokenizer, load_task(data_dir, task), pooling, **encode_kwargs) for task in tasks
    }
    seven = [results[task] for task in AVG_TASKS if task in results]
    results["avg"] = sum(seven) / len(seven) if len(seven) == len(AVG_TASKS) else None
    return results


def format_results(results: dict[str, float | None]) -> str:
    """A two-column text table of task and Spearman x100 ("-" for None)."""
    rows = [f"{'task':<10} {'spearman':>8}"]
    rows += [f"{task:<10} {'-' if value is None else f'{value:.2f}':>8}" for task, value in results.items()]
    return "\n".join(rows)


def load_encoder(model_dir: str | Path) -> tuple[torch.nn.Module, object]:
    """``(AutoModel, tokenizer)`` from a local folder, failing in one line when the tokenizer is missing.

    (:func:`~nlpssl.data.tokenizer.load_tokenizer` checks, because transformers 5 would
    otherwise build an empty tokenizer and the figures would come out as noise.)

    Example::

        model, tokenizer = load_encoder("outputs/simcse/final")
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise UserError(f"model folder {model_dir} not found")
    tokenizer = load_tokenizer(model_dir)  # fails in one line when the folder has no tokenizer
    model = load_pretrained(AutoModel, str(model_dir))
    check_vocab_fits(model, tokenizer)
    return model, tokenizer
