"""Labelled text for sequence classification and regression: read, check, map labels, tokenize.

Every split becomes a `datasets.Dataset` with ``text`` (and ``text_pair`` for
sentence pairs) and ``labels`` (a class id, or a float score in regression
mode); :func:`tokenize_splits` adds ``input_ids`` (and ``token_type_ids`` for pairs).

Sources:

* a local ``.csv``, ``.tsv``, ``.jsonl``/``.json`` or ``.parquet`` file with a header
  (or :attr:`Columns.column_names` for a csv/tsv without one);
* the built-in ``bible-genre`` task (:mod:`nlpssl.data.bible_genre`);
* ``glue/<task>`` (e.g. ``glue/sst2``) from the Hugging Face Hub, when online (:mod:`nlpssl.data.glue`).

Class names are the sorted distinct labels of the training file (ints sort as
numbers), so class id ``i`` is the same on every machine and in every split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import datasets

from nlpssl.data.bible_genre import BUILTIN_TASKS, bible_genre_files
from nlpssl.data.corpus import check_text_column, load_table
from nlpssl.data.glue import GLUE_PREFIX, is_glue, read_glue
from nlpssl.errors import UserError
from nlpssl.sources import local_path


@dataclass(frozen=True)
class Columns:
    """Which columns hold the text(s) and the label.

    ``text`` may list alternatives, ``"sentence|content"``: each file uses the
    first one it has (SST-2's train file says ``sentence``, dev and test ``content``).
    ``column_names`` names the columns of csv/tsv files that have no header row
    (STS-B: ``("sentence1", "sentence2", "score")``); leave it empty for files with one.
    """

    text: str = "text"
    text_pair: str | None = None
    label: str = "label"
    column_names: tuple[str, ...] = ()


@dataclass
class LabelledSplits:
    """Train / validation / test rows with ``labels``; ``label_names`` is None in regression mode."""

    train: datasets.Dataset
    validation: datasets.Dataset | None
    test: datasets.Dataset | None
    label_names: list[str] | None

    def named(self) -> dict[str, datasets.Dataset]:
        """The splits that exist, by name."""
        splits = {"train": self.train, "validation": self.validation, "test": self.test}
        return {name: split for name, split in splits.items() if split is not None}


def load_labelled_splits(
    train: str,
    validation: str | None = None,
    test: str | None = None,
    columns: Columns = Columns(),
    regression: bool = False,
    label_names: Sequence[str] = (),
    validation_fraction: float = 0.1,
    max_train_examples: int | None = None,
    seed: int = 0,
) -> LabelledSplits:
    """Read and check labelled splits; map labels to class ids fixed by the training file.

    Without ``validation`` a seeded ``validation_fraction`` of the training rows
    is held out (0: no validation). ``label_names`` renames the sorted training
    labels for display (e.g. ``negative, positive`` for SST-2's ``0, 1``). Missing
    labels or texts, an unknown column, a validation/test label never seen in
    training, or a single-class training set raise a one-line :class:`UserError`.

    Example::

        splits = load_labelled_splits("train.csv", "dev.csv", columns=Columns(text="review", label="stars"))
        splits.label_names, splits.train[0]["labels"]   # ['1', '2', ...], 3
    """
    sources = _default_sources(train, validation, test)
    train_table = read_labelled(sources["train"], columns, "train")
    names, known = None, {}
    if regression:
        train_table = _with_scores(train_table, sources["train"])
    else:
        names, known, train_table = _with_class_ids(train_table, sources["train"], label_names)
        known |= {name: i for i, name in enumerate(names)}  # other splits may spell labels by display name
    held_out = None
    if sources["validation"] is None and validation_fraction > 0:
        parts = train_table.train_test_split(test_size=validation_fraction, seed=seed, shuffle=True)
        train_table, held_out = parts["train"], parts["test"]
    if max_train_examples and len(train_table) > max_train_examples:
        train_table = train_table.shuffle(seed=seed).select(range(max_train_examples))
    others = {}
    for split in ("validation", "test"):
        source = sources[split]
        if source is None:
            others[split] = held_out if split == "validation" else None
            continue
        table = read_labelled(source, columns, split)
        others[split] = _with_scores(table, source) if regression else _with_known_ids(table, source, known, sources["train"])
    return LabelledSplits(train_table, others["validation"], others["test"], names)


def read_labelled(source: str, columns: Columns, split: str = "train") -> datasets.Dataset:
    """Rows of ``source`` as ``text`` [, ``text_pair``], ``label`` (raw values); missing cells are errors."""
    table, columns = _read_table(source, columns, split)
    wanted = {"text": _pick_column(table, columns.text, source), "label": _pick_column(table, columns.label, source)}
    if columns.text_pair:
        wanted["text_pair"] = _pick_column(table, columns.text_pair, source)
    if len(table) == 0:
        raise UserError(f"{source} has no data rows; add labelled rows below the header")
    for name, key in (("text", "--data.text_column"), ("text_pair", "--data.text_pair_column")):
        if name in wanted:
            check_text_column(table, wanted[name], source, key)
    table = table.select_columns(list(wanted.values()))
    table = table.rename_columns({old: new for new, old in wanted.items() if old != new})
    for name in ("text", "text_pair"):
        if name in table.column_names:
            _fail_on_missing(table[name], source, f"text in column '{wanted[name]}'", blank_is_missing=False)
    _fail_on_missing(table["label"], source, f"label in column '{wanted['label']}'", blank_is_missing=True)
    return table


def _read_table(source: str, columns: Columns, split: str) -> tuple[datasets.Dataset, Columns]:
    if is_glue(source):
        table, text, pair = read_glue(source.removeprefix(GLUE_PREFIX), split)
        return table, Columns(text=text, text_pair=pair, label="label")
    path = local_path(source, suffix_means_file=True)
    if path is not None and not path.is_file():
        raise UserError(f"data file {path} not found; pass an existing file with --data.{split}")
    return load_table(source, split=split, column_names=columns.column_names or None), columns


def _pick_column(table: datasets.Dataset, names: str, source: str) -> str:
    options = [name.strip() for name in names.split("|")]
    for name in options:
        if name in table.column_names:
            return name
    raise UserError(
        f"{source} has no column '{names}'; its columns are {', '.join(table.column_names)} "
        f"(set --data.text_column, --data.text_pair_column or --data.label_column)"
    )


def _is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip())


def _fail_on_missing(values: list, source: str, what: str, blank_is_missing: bool) -> None:
    missing = [i for i, value in enumerate(values) if value is None or (blank_is_missing and _is_missing(value))]
    if missing:
        raise UserError(
            f"{source}: {len(missing)} of {len(values)} row(s) have no {what}, first at data row {missing[0] + 1}; "
            f"fill or remove those rows"
        )


def _label_key(value, source: str) -> int | str:
    """A raw label as a class key: integral numbers become ints, text is stripped."""
    if isinstance(value, bool):
        return int(value)
    if not isinstance(value, (str, int, float)):
        raise UserError(f"{source}: label {value!r} is a {type(value).__name__}; a label is a class name or a number")
    if isinstance(value, float):
        if not value.is_integer():
            raise UserError(
                f"{source}: label {value} is not a class; for real-valued scores set --data.task=regression"
            )
        return int(value)
    return value.strip() if isinstance(value, str) else value


def _with_class_ids(
    table: datasets.Dataset, source: str, display_names: Sequence[str]
) -> tuple[list[str], dict[str, int], datasets.Dataset]:
    """Class names, the id of every raw label (as text), and the table with ``labels``."""
    keys = [_label_key(v, source) for v in table["label"]]
    if len({type(k) for k in keys}) > 1:
        keys = [str(k) for k in keys]  # a column mixing numbers and text: compare as text
    classes = sorted(set(keys))
    if len(classes) < 2:
        raise UserError(
            f"{source}: every training row has the label '{classes[0]}'; a classifier needs at least two classes "
            f"(for real-valued scores set --data.task=regression)"
        )
    names = [str(c) for c in classes]
    if display_names:
        if len(display_names) != len(names):
            raise UserError(
                f"data.label_names has {len(display_names)} name(s) but {source} has {len(names)} labels "
                f"({', '.join(names)}); give one name per sorted label"
            )
        names = list(display_names)
    class_id = {str(c): i for i, c in enumerate(classes)}
    ids = [class_id[str(k)] for k in keys]
    return names, class_id, table.remove_columns("label").add_column("labels", ids)


def _with_known_ids(table: datasets.Dataset, source: str, known: dict[str, int], train_source: str) -> datasets.Dataset:
    keys = [str(_label_key(v, source)) for v in table["label"]]
    unseen = sorted({k for k in keys if k not in known})
    if unseen:
        count = sum(k not in known for k in keys)
        raise UserError(
            f"{source}: label(s) {', '.join(repr(k) for k in unseen)} ({count} row(s)) never occur in the training data "
            f"{train_source}; the model has no output for them: add training rows or remove those"
        )
    return table.remove_columns("label").add_column("labels", [known[k] for k in keys])


def _with_scores(table: datasets.Dataset, source: str) -> datasets.Dataset:
    scores = []
    for row, value in enumerate(table["label"]):
        try:
            score = float(value)
            if not math.isfinite(score):
                raise ValueError
            scores.append(score)
        except (TypeError, ValueError):
            raise UserError(
                f"{source}: label {value!r} at data row {row + 1} is not a finite number; regression needs real-valued scores"
            ) from None
    return table.remove_columns("label").add_column("labels", scores)


def tokenize_splits(
    splits: LabelledSplits, tokenizer, max_length: int = 128, num_proc: int | None = None
) -> LabelledSplits:
    """Add ``input_ids`` (and ``token_type_ids`` for pairs) to every split with `datasets.map`.

    Rows are truncated to ``max_length`` tokens (the longer text of a pair first)
    and left unpadded: :class:`~nlpssl.data.collators.ClassificationCollator`
    pads each batch to its own longest row.

    Example::

        splits = tokenize_splits(load_labelled_splits("train.csv", "dev.csv"), tokenizer, max_length=128)
        len(splits.train[0]["input_ids"])  # <= 128
    """
    pairs = "text_pair" in splits.train.column_names
    keep = ["input_ids", "token_type_ids"] if pairs else ["input_ids"]

    def encode(batch: dict) -> dict:
        encoded = tokenizer(batch["text"], batch["text_pair"] if pairs else None, truncation=True, max_length=max_length)
        return {key: encoded[key] for key in keep if key in encoded}

    mapped = {
        name: split.map(encode, batched=True, num_proc=num_proc, desc=f"Tokenizing {name}") if split is not None else None
        for name, split in (("train", splits.train), ("validation", splits.validation), ("test", splits.test))
    }
    return LabelledSplits(mapped["train"], mapped["validation"], mapped["test"], splits.label_names)


def token_lengths(table: datasets.Dataset) -> list[int]:
    """Tokens of each row (for length-grouped batches)."""
    return [len(ids) for ids in table["input_ids"]]


def _default_sources(train: str, validation: str | None, test: str | None) -> dict[str, str | None]:
    """Built-in and GLUE tasks bring their own validation (and test) splits."""
    if train in BUILTIN_TASKS:
        files = bible_genre_files()
        return {"train": str(files["train"]), "validation": validation or str(files["validation"]), "test": test or str(files["test"])}
    if is_glue(train):
        return {"train": train, "validation": validation or train, "test": test}
    return {"train": train, "validation": validation, "test": test}
