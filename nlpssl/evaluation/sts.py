"""Semantic textual similarity: read scored pairs, embed, report Spearman x100 of cosine vs gold.

Reporting protocol (shared/data/README.md, as SimCSE reports): Spearman x100
between the cosine similarity of the two embeddings and the gold score;
STS12-16 in the "all" setting (every subset of a year pooled into one
correlation); STS-B and SICK-R on their test splits.

Shapes: N sentences, D embedding width, P pairs, B batch, L length.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from scipy.stats import spearmanr
from tqdm.auto import tqdm
from transformers import AutoModel

from nlpssl.data.tokenizer import load_tokenizer
from nlpssl.errors import UserError
from nlpssl.models.heads import pool
from nlpssl.models.text import check_vocab_fits, load_pretrained

ScoredPair = tuple[str, str, float]
Pooling = str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# the subsets SentEval (and so SimCSE) reads; STS13's SMT is not redistributed
SENTEVAL_SUBSETS = {
    "sts12": ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"),
    "sts13": ("FNWN", "headlines", "OnWN"),
    "sts14": ("deft-forum", "deft-news", "headlines", "images", "OnWN", "tweet-news"),
    "sts15": ("answers-forums", "answers-students", "belief", "headlines", "images"),
    "sts16": ("answer-answer", "headlines", "plagiarism", "postediting", "question-question"),
}
AVG_TASKS = ("sts12", "sts13", "sts14", "sts15", "sts16", "stsb_test", "sickr")
STS_TASKS = ("stsb_dev", "stsb_test", *SENTEVAL_SUBSETS, "sickr")
ENCODE_POOLING = ("cls", "mean", "pooler")
SICK_FILES = {"train": "SICK_train.txt", "trial": "SICK_trial.txt", "test": "SICK_test_annotated.txt"}


def default_data_dir() -> Path:
    """``$NLPSSL_SHARED_DATA`` if set, else ``<repo>/../shared/data`` (the CI and developer layout)."""
    env = os.environ.get("NLPSSL_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[3] / "shared" / "data"


def read_scored_pairs(
    path: str | Path,
    sentence1_column: str | int = "sentence1",
    sentence2_column: str | int = "sentence2",
    score_column: str | int = "score",
    score_range: tuple[float, float] | None = None,
    delimiter: str | None = None,
) -> list[ScoredPair]:
    """Read a csv/tsv of scored sentence pairs; any mistake is a one-line :class:`UserError`.

    Args:
        path: the file; ``.tsv``/``.tab``/``.txt`` files are tab-separated, others comma-separated.
        sentence1_column, sentence2_column, score_column: header names, or
            0-based indices (ints) for a file without a header row.
        score_range: (low, high) the scores must lie in, both inclusive; None checks nothing.
        delimiter: overrides the one guessed from the suffix.

    Example::

        pairs = read_scored_pairs("my_pairs.tsv", "query", "passage", "label", score_range=(0, 1))
        pairs[0]  # ('how do I ...', 'To reset ...', 0.8)
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"pairs file {path} not found")
    delimiter = delimiter or ("\t" if path.suffix.lower() in (".tsv", ".tab", ".txt") else ",")
    columns = (sentence1_column, sentence2_column, score_column)
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        indices = _column_indices(path, reader, columns)
        pairs = [_parse_row(path, reader.line_num, row, indices, score_range) for row in reader if any(row)]
    if not pairs:
        raise UserError(f"{path} has no scored pairs")
    return pairs


def _column_indices(path: Path, reader, columns: Sequence[str | int]) -> list[int]:
    """Column positions: ints as given (no header row), names looked up in the header row."""
    if all(isinstance(column, int) for column in columns):
        return list(columns)
    header = next(reader, [])
    missing = [str(column) for column in columns if column not in header]
    if missing:
        raise UserError(
            f"{path} has no column {', '.join(map(repr, missing))} (header: {', '.join(header)}); "
            f"pass --sentence1-column/--sentence2-column/--score-column"
        )
    return [header.index(column) for column in columns]


def _parse_row(path: Path, line: int, row: list[str], indices: list[int], score_range) -> ScoredPair:
    where = f"{path} line {line}"
    if len(row) <= max(indices):
        raise UserError(f"{where} has {len(row)} fields but column {max(indices)} is needed; check the delimiter")
    first, second, raw_score = (row[i].strip() for i in indices)
    if not first or not second:
        raise UserError(f"{where} has an empty sentence; remove the row or fill it in")
    try:
        score = float(raw_score)
    except ValueError:
        raise UserError(f"{where}: score {raw_score!r} is not a number") from None
    if score_range is not None and not score_range[0] <= score <= score_range[1]:
        raise UserError(f"{where}: score {score} is outside the declared range {score_range[0]} to {score_range[1]}")
    return first, second, score


def read_stsb(data_dir: str | Path, split: str = "test") -> list[ScoredPair]:
    """STS Benchmark pairs from ``data_dir/stsb/stsb-en-{split}.csv`` (scores 0-5): 5749 / 1500 / 1379."""
    return read_scored_pairs(Path(data_dir) / "stsb" / f"stsb-en-{split}.csv", 0, 1, 2, score_range=(0, 5), delimiter=",")


def read_sickr(data_dir: str | Path, split: str = "test") -> list[ScoredPair]:
    """SICK relatedness pairs (scores 1-5) of ``split`` ("train", "trial", "test": 4927 pairs)."""
    path = Path(data_dir) / "sick" / SICK_FILES[split]
    return read_scored_pairs(path, "sentence_A", "sentence_B", "relatedness_score", score_range=(1, 5), delimiter="\t")


def read_senteval_sts(data_dir: str | Path, task: str) -> dict[str, list[ScoredPair]]:
    """One SemEval year ("sts12" .. "sts16") in the SentEval layout, as {subset: pairs}.

    Pairs whose gold score is empty (not annotated) are skipped, as SentEval does:
    STS12 3108, STS13 1500, STS14 3750, STS15 3000, STS16 1186 pairs in all.
    """
    folder = Path(data_dir) / "senteval_sts" / "data" / "downstream" / "STS" / f"STS{task[3:]}-en-test"
    return {subset: _read_senteval_subset(folder, subset) for subset in SENTEVAL_SUBSETS[task]}


def _read_senteval_subset(folder: Path, subset: str) -> list[ScoredPair]:
    input_path, gold_path = folder / f"STS.input.{subset}.txt", folder / f"STS.gs.{subset}.txt"
    for path in (input_path, gold_path):
        if not path.is_file():
            raise UserError(f"STS file {path} not found; check --data-dir")
    lines = input_path.read_text(encoding="utf-8").splitlines()
    golds = gold_path.read_text(encoding="utf-8").splitlines()
    if len(lines) != len(golds):
        raise UserError(f"{input_path} has {len(lines)} lines but {gold_path.name} has {len(golds)}")
    pairs = []
    for line, gold in zip(lines, golds):
        if gold.strip():
            first, second = line.split("\t")[:2]
            # SentEval splits on whitespace and joins with one space
            pairs.append((" ".join(first.split()), " ".join(second.split()), float(gold)))
    return pairs


def load_task(data_dir: str | Path, task: str) -> list[ScoredPair]:
    """The pairs of one task of :data:`STS_TASKS`; an STS year pools all its subsets ("all" setting)."""
    if task in SENTEVAL_SUBSETS:
        return [pair for pairs in read_senteval_sts(data_dir, task).values() for pair in pairs]
    if task in ("stsb_dev", "stsb_test"):
        return read_stsb(data_dir, task.removeprefix("stsb_"))
    if task == "sickr":
        return read_sickr(data_dir, "test")
    raise UserError(f"unknown STS task {task!r}; choose from {', '.join(STS_TASKS)}")


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
