"""Semantic textual similarity data: scored sentence pairs from the benchmarks and from user files.

Readers for STS-B, SICK-R and the SemEval STS12-16 years in the SentEval layout
(``../shared/data``, see its README), and for any csv/tsv of scored pairs.
Every mistake in a file is a one-line :class:`~nlpssl.errors.UserError` that
names the file and line. Scoring lives in :mod:`nlpssl.evaluation.sts`.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Sequence

from nlpssl.errors import UserError

ScoredPair = tuple[str, str, float]
_DELIMITER_NAMES = {",": "comma-separated", "\t": "tab-separated"}

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
        try:
            indices = _column_indices(path, reader, columns)
            pairs = [_parse_row(path, reader.line_num, row, indices, score_range) for row in reader if any(row)]
        except UnicodeDecodeError as error:
            raise UserError(f"{path}: not valid UTF-8 ({error.reason}); convert it, e.g. iconv -f latin1 -t utf-8") from None
        except csv.Error as error:  # a NUL byte, a field over csv's size limit, a quote left open
            raise UserError(f"{path} line {reader.line_num}: not a valid {_DELIMITER_NAMES.get(delimiter, 'delimited')} file ({error})") from None
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
    if not math.isfinite(score):
        raise UserError(f"{where}: score {raw_score!r} is not a finite number")
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
    lines, golds = _read_lines(input_path), _read_lines(gold_path)
    if len(lines) != len(golds):
        raise UserError(f"{input_path} has {len(lines)} lines but {gold_path.name} has {len(golds)}")
    pairs = []
    for number, (line, gold) in enumerate(zip(lines, golds), start=1):
        if gold.strip():
            sentences = line.split("\t")
            try:
                score = float(gold)
            except ValueError:
                score = math.nan
            if len(sentences) < 2 or not math.isfinite(score):
                raise UserError(
                    f"{input_path.name} / {gold_path.name} line {number}: need two tab-separated sentences and a "
                    f"numeric gold score, got {len(sentences)} field(s) and {gold.strip()!r}; check the files in {input_path.parent}"
                )
            # SentEval splits on whitespace and joins with one space
            pairs.append((" ".join(sentences[0].split()), " ".join(sentences[1].split()), score))
    return pairs


def _read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (line breaks as ``str.splitlines`` sees them)."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not valid UTF-8 at byte offset {error.start}; convert it, e.g. iconv -f latin1 -t utf-8") from None


def load_task(data_dir: str | Path, task: str) -> list[ScoredPair]:
    """The pairs of one task of :data:`STS_TASKS`; an STS year pools all its subsets ("all" setting)."""
    if task in SENTEVAL_SUBSETS:
        return [pair for pairs in read_senteval_sts(data_dir, task).values() for pair in pairs]
    if task in ("stsb_dev", "stsb_test"):
        return read_stsb(data_dir, task.removeprefix("stsb_"))
    if task == "sickr":
        return read_sickr(data_dir, "test")
    raise UserError(f"unknown STS task {task!r}; choose from {', '.join(STS_TASKS)}")
