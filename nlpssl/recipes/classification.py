"""The fine-tuning recipe: config sections, labelled splits, model selection and the final report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nlpssl.atomic import atomic_write_text
from nlpssl.data.classification import Columns, LabelledSplits, load_labelled_splits, tokenize_splits
from nlpssl.errors import UserError
from nlpssl.evaluation.classification import ValidationScores, predict_logits, score_logits, score_names, write_predictions
from nlpssl.evaluation.metrics import save_confusion_matrix_png
from nlpssl.evaluation.selection import KeepBest
from nlpssl.recipes.common import MINILM
from nlpssl.train import TrainConfig

MODEL_COLUMNS = ("input_ids", "token_type_ids", "labels")


@dataclass
class LabelledDataConfig:
    """Labelled files (csv/tsv/jsonl/parquet with a header), the built-in ``bible-genre`` task, or ``glue/<task>``."""

    train: str = "bible-genre"
    validation: str | None = None  # a file; else the task's own split or a held-out share of train
    test: str | None = None
    task: Literal["classification", "regression"] = "classification"
    text_column: str = "text"  # alternatives with |, e.g. sentence|content
    text_pair_column: str | None = None  # set for sentence pairs
    label_column: str = "label"
    column_names: list[str] = field(default_factory=list)  # for csv/tsv files without a header row
    label_names: list[str] = field(default_factory=list)  # display names of the sorted training labels
    validation_fraction: float = 0.1
    max_train_examples: int | None = None  # a seeded random subset of the training rows
    max_length: int = 128
    num_proc: int | None = None


@dataclass
class ClassifierModelConfig:
    checkpoint: str = MINILM  # a local folder, "minilm", or a hub name when online
    random_init: bool = False  # same architecture, random weights (the no-pretraining baseline)


@dataclass
class SelectionConfig:
    """Model selection on the validation split (the ``eval`` section)."""

    metric: str | None = None  # default: accuracy (classification) or spearman (regression)
    patience: int | None = None  # stop after this many evaluations without improvement; none: never
    batch_size: int = 128


@dataclass
class ClassificationRecipe:
    data: LabelledDataConfig = field(default_factory=LabelledDataConfig)
    model: ClassifierModelConfig = field(default_factory=ClassifierModelConfig)
    eval: SelectionConfig = field(default_factory=SelectionConfig)
    train: TrainConfig = field(
        default_factory=lambda: TrainConfig(output_dir="outputs/classify", group_by_length=True, lr=5e-5)
    )


def load_classification_data(data: LabelledDataConfig, tokenizer, seed: int) -> LabelledSplits:
    """Read, check and tokenize the splits; prints their sizes and the label names."""
    columns = Columns(data.text_column, data.text_pair_column, data.label_column, tuple(data.column_names))
    splits = load_labelled_splits(
        data.train, data.validation, data.test, columns, regression=data.task == "regression",
        label_names=data.label_names, validation_fraction=data.validation_fraction,
        max_train_examples=data.max_train_examples, seed=seed,
    )
    sizes = ", ".join(f"{name} {len(rows):,}" for name, rows in splits.named().items())
    labels = ", ".join(splits.label_names) if splits.label_names else "a real-valued score"
    print(f"nlpssl: {sizes} rows; labels: {labels}")
    return tokenize_splits(splits, tokenizer, data.max_length, data.num_proc)


def training_rows(splits: LabelledSplits):
    """The training split with only what the model reads (the loader then moves no text)."""
    return splits.train.select_columns([c for c in MODEL_COLUMNS if c in splits.train.column_names])


def model_selector(splits: LabelledSplits, collator, selection: SelectionConfig, directory: Path, tokenizer):
    """KeepBest on the validation split's ``selection.metric``; None without a validation split."""
    if splits.validation is None:
        if selection.patience is not None:
            raise UserError("eval.patience needs a validation split: set data.validation or data.validation_fraction > 0")
        return None
    metric = selection.metric or ("spearman" if splits.label_names is None else "accuracy")
    allowed = ["loss", *score_names(splits.label_names)]
    if metric not in allowed:
        raise UserError(f"eval.metric={metric} is not reported for this task; choose from {', '.join(allowed)}")
    scores = ValidationScores(splits.validation, collator, splits.label_names, batch_size=selection.batch_size)
    return KeepBest(
        scores, f"val_{metric}", directory, tokenizer, higher_is_better=metric != "loss", patience=selection.patience
    )


def report(objective, splits: LabelledSplits, collator, output_dir: Path, batch_size: int = 128) -> dict:
    """Score ``objective`` on validation and test; write metrics.json, predictions_*.csv, confusion_matrix.png.

    The confusion matrix is drawn for the test split when there is one, else for
    validation. Returns the metrics by split.
    """
    metrics: dict[str, dict] = {}
    confusion_split = None
    for name, rows in splits.named().items():
        if name == "train":
            continue
        logits = predict_logits(objective, rows, collator, batch_size)  # (N, C)
        write_predictions(output_dir / f"predictions_{name}.csv", rows, logits, splits.label_names)
        metrics[name] = score_logits(logits, rows["labels"], splits.label_names)
        confusion_split = (rows["labels"], logits.argmax(-1).tolist())
    if splits.label_names is not None and confusion_split is not None:
        save_confusion_matrix_png(*confusion_split, splits.label_names, output_dir / "confusion_matrix.png")
    atomic_write_text(output_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics
