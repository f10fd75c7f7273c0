"""Offline `evaluate` metrics shipped in ``nlpssl/metrics`` and a confusion-matrix plot.

``evaluate.load("accuracy")`` fetches a script from the Hub; ``load_metric("accuracy")``
loads the copy shipped with nlpssl by absolute path, so it never needs the network.

Score names used by :func:`compute_metrics` (and as the keys of its result):

========================  =====================  =====================
score                     metric module          compute arguments
========================  =====================  =====================
``accuracy``              accuracy
``f1``                    f1                     ``average="binary"``
``f1_macro``              f1                     ``average="macro"``
``f1_micro``              f1                     ``average="micro"``
``matthews_correlation``  matthews_correlation
``pearson``               pearsonr
``spearman``              spearmanr
========================  =====================  =====================

Shapes: N examples, C classes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import evaluate
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from nlpssl.errors import UserError
from nlpssl.metrics import METRICS_DIR

# score name -> (metric module, extra compute kwargs, key of the module's result)
SCORES: dict[str, tuple[str, dict, str]] = {
    "accuracy": ("accuracy", {}, "accuracy"),
    "f1": ("f1", {"average": "binary"}, "f1"),
    "f1_macro": ("f1", {"average": "macro"}, "f1"),
    "f1_micro": ("f1", {"average": "micro"}, "f1"),
    "matthews_correlation": ("matthews_correlation", {}, "matthews_correlation"),
    "pearson": ("pearsonr", {}, "pearsonr"),
    "spearman": ("spearmanr", {}, "spearmanr"),
}


def available_metrics() -> list[str]:
    """Names of the metric modules shipped in ``nlpssl/metrics``, sorted.

    Example::

        available_metrics()  # ['accuracy', 'f1', 'matthews_correlation', 'pearsonr', 'spearmanr']
    """
    return sorted(path.parent.name for path in METRICS_DIR.glob("*/*.py") if path.stem == path.parent.name)


def load_metric(name: str, **load_kwargs) -> evaluate.EvaluationModule:
    """Load a metric module shipped with nlpssl, by absolute path: no Hub, no network.

    Args:
        name: one of :func:`available_metrics`.
        load_kwargs: passed to ``evaluate.load`` (``keep_in_memory``,
            ``num_process``/``process_id`` for distributed evaluation, ...).

    Example::

        f1 = load_metric("f1")
        f1.compute(predictions=[0, 1, 2], references=[0, 1, 1], average="macro")  # {'f1': ...}
    """
    available = available_metrics()
    if name not in available:
        raise UserError(f"unknown metric {name!r}; available metrics: {', '.join(available)}")
    return evaluate.load(str(METRICS_DIR / name), **load_kwargs)


def compute_metrics(names: Iterable[str], predictions, references) -> dict[str, float]:
    """Compute several scores at once; the keys are the score names (see the module table).

    Args:
        names: score names, e.g. ``["accuracy", "f1_macro"]``.
        predictions: (N,) class ids or real scores; list, numpy array or tensor.
        references: (N,) gold values of the same kind.

    Example::

        compute_metrics(["accuracy", "f1_macro"], predictions=[0, 2, 1], references=[0, 1, 1])
        # {'accuracy': 0.666..., 'f1_macro': 0.555...}
    """
    names = list(names)
    unknown = [name for name in names if name not in SCORES]
    if unknown:
        raise UserError(f"unknown score(s) {', '.join(map(repr, unknown))}; choose from: {', '.join(SCORES)}")
    predictions, references = _to_numpy(predictions), _to_numpy(references)
    scores = {}
    for name in names:
        module_name, compute_kwargs, result_key = SCORES[name]
        metric = load_metric(module_name, keep_in_memory=True)
        result = metric.compute(predictions=predictions, references=references, **compute_kwargs)
        scores[name] = result[result_key]
    return scores


def _to_numpy(values) -> np.ndarray:
    """(N,) list, numpy array or (any-device) tensor -> numpy array."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def save_confusion_matrix_png(
    gold: Sequence[int],
    predicted: Sequence[int],
    label_names: Sequence[str],
    path: str | Path,
) -> Path:
    """Draw the confusion matrix (rows gold, columns predicted, cells counts) to a PNG.

    Uses matplotlib's Agg canvas directly, so it works headless and never
    touches pyplot's global backend.

    Args:
        gold: (N,) gold class ids in ``range(len(label_names))``.
        predicted: (N,) predicted class ids, same range.
        label_names: (C,) display name of each class id.
        path: the PNG file to write; parent folders are created.

    Example::

        save_confusion_matrix_png([0, 1, 1], [0, 1, 0], ["neg", "pos"], "out/confusion.png")
    """
    gold, predicted = _to_numpy(gold), _to_numpy(predicted)
    num_classes = len(label_names)
    for side, ids in (("gold", gold), ("predicted", predicted)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
            raise UserError(
                f"{side} labels span {ids.min()}..{ids.max()} but only {num_classes} label_names were given; "
                "pass one name per class id"
            )
    counts = confusion_matrix(gold, predicted, labels=list(range(num_classes)))  # (C, C)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _draw_confusion(counts, label_names).savefig(path, dpi=120)
    return path


def _draw_confusion(counts: np.ndarray, label_names: Sequence[str]) -> Figure:
    """A figure of the (C, C) count matrix with every cell annotated."""
    num_classes = len(label_names)
    side = 2.0 + 0.6 * num_classes
    figure = Figure(figsize=(side, side), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(counts, cmap="Blues")
    figure.colorbar(image, ax=axes, shrink=0.8)
    ticks = np.arange(num_classes)
    axes.set_xticks(ticks, labels=label_names, rotation=45, ha="right")
    axes.set_yticks(ticks, labels=label_names)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    # white text on dark cells keeps the counts readable
    threshold = counts.max() / 2 if counts.size else 0
    for row in range(num_classes):
        for col in range(num_classes):
            color = "white" if counts[row, col] > threshold else "black"
            axes.text(col, row, str(counts[row, col]), ha="center", va="center", color=color)
    return figure
