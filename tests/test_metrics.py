"""The offline metric modules: values from their definitions (hand-counted cases, naive loops), no network, naming, plots.

The modules call scikit-learn and SciPy, so comparing them with those libraries
would test a library against itself; the references here are written out.
"""

from __future__ import annotations

import math
import os
import socket
from fnmatch import fnmatch
from pathlib import Path

import evaluate
import matplotlib.image
import numpy as np
import pytest
import torch
from scipy.stats import t as student_t

from nlpssl.errors import UserError
from nlpssl.evaluation.metrics import (
    SCORES,
    available_metrics,
    compute_metrics,
    load_metric,
    save_confusion_matrix_png,
)
from nlpssl.metrics import METRICS_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]

SHIPPED = ["accuracy", "f1", "matthews_correlation", "pearsonr", "spearmanr"]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to resolve or connect a socket fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def class_ids(num_classes: int, size: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random (predictions, references) class ids that agree more often than chance."""
    rng = np.random.default_rng(seed)
    references = rng.integers(0, num_classes, size)
    predictions = np.where(rng.random(size) < 0.6, references, rng.integers(0, num_classes, size))
    return predictions, references


def real_scores(size: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Correlated (predictions, references) with ties in the references (STS-style 0..5 steps)."""
    rng = np.random.default_rng(seed)
    references = np.round(rng.uniform(0, 5, size) * 2) / 2
    return references + rng.normal(0, 1.5, size), references


def test_available_metrics_lists_the_shipped_modules():
    assert available_metrics() == SHIPPED


def test_loading_is_offline(no_network):
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest
    for name in SHIPPED:
        metric = load_metric(name)
        assert isinstance(metric, evaluate.EvaluationModule)
        assert metric.name == name
        assert metric.description.strip() and metric.citation.strip()


def test_plain_evaluate_load_of_the_folder_works(no_network):
    metric = evaluate.load(str(METRICS_DIR / "accuracy"))
    assert metric.compute(predictions=[0, 1, 1], references=[0, 1, 0]) == pytest.approx({"accuracy": 2 / 3})


def confusion(references, predictions, num_classes: int) -> np.ndarray:
    """(C, C) counts[gold, predicted], by a plain loop."""
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    for gold, predicted in zip(references, predictions):
        counts[gold, predicted] += 1
    return counts


def naive_f1_per_class(counts: np.ndarray) -> list[float]:
    """F1 of each class from a confusion matrix: 2 TP / (2 TP + FP + FN), 0 for a class never seen nor predicted."""
    scores = []
    for c in range(len(counts)):
        tp = counts[c, c]
        fp, fn = counts[:, c].sum() - tp, counts[c, :].sum() - tp
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return scores


def naive_f1(references, predictions, num_classes: int, average: str, pos_label: int = 1) -> float:
    counts = confusion(references, predictions, num_classes)
    per_class = naive_f1_per_class(counts)
    if average == "binary":
        return per_class[pos_label]
    if average == "macro":
        return sum(per_class) / num_classes
    if average == "weighted":
        support = counts.sum(axis=1)
        return float(sum(f * n for f, n in zip(per_class, support)) / support.sum())
    # micro: pool every decision; each wrong prediction is one FP and one FN
    tp = np.trace(counts)
    wrong = counts.sum() - tp
    return 2 * tp / (2 * tp + 2 * wrong)


def naive_mcc(references, predictions, num_classes: int) -> float:
    """Gorodkin's multiclass MCC: (c s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2))."""
    counts = confusion(references, predictions, num_classes)
    correct, total = np.trace(counts), counts.sum()
    predicted, true = counts.sum(axis=0), counts.sum(axis=1)
    numerator = correct * total - (predicted * true).sum()
    return float(numerator / math.sqrt((total**2 - (predicted**2).sum()) * (total**2 - (true**2).sum())))


def naive_pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum()))


def average_ranks(values) -> list[float]:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            ranks[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def two_sided_t_pvalue(r: float, n: int) -> float:
    """The p-value of a correlation r over n pairs under the null of no correlation (t with n - 2 degrees of freedom)."""
    t = r * math.sqrt((n - 2) / (1 - r * r))
    return float(2 * student_t.sf(abs(t), n - 2))


def test_worked_examples_by_hand():
    """Small cases whose values are counted by hand, independent of any library."""
    # 3 of 4 right
    assert load_metric("accuracy").compute(predictions=[0, 1, 1, 0], references=[0, 1, 0, 0]) == {"accuracy": 0.75}
    # class 0: P 1, R 1 -> 1; class 1: TP 1, FN 1 -> 2/3; class 2: TP 1, FP 1 -> 2/3; macro 7/9
    macro = load_metric("f1").compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2], average="macro")["f1"]
    assert macro == pytest.approx(7 / 9)
    # binary: TP 2, FP 1, FN 1 -> 2*2 / (4 + 2) = 2/3; with pos_label 0: TP 1, FP 1, FN 1 -> 1/2
    predictions, references = [1, 1, 1, 0, 0], [1, 1, 0, 1, 0]
    assert load_metric("f1").compute(predictions=predictions, references=references)["f1"] == pytest.approx(2 / 3)
    assert load_metric("f1").compute(predictions=predictions, references=references, pos_label=0)["f1"] == pytest.approx(1 / 2)
    # MCC: TP 2, TN 1, FP 1, FN 1 -> (2*1 - 1*1) / sqrt(3*3*2*2) = 1/6; inverted predictions flip the sign
    mcc = load_metric("matthews_correlation")
    assert mcc.compute(predictions=predictions, references=references)["matthews_correlation"] == pytest.approx(1 / 6)
    flipped = [1 - p for p in predictions]
    assert mcc.compute(predictions=flipped, references=references)["matthews_correlation"] == pytest.approx(-1 / 6)
    # a monotone but non-linear relation: Spearman 1, Pearson below 1; reversed: -1
    x, y = [1.0, 2.0, 3.0, 4.0], [1.0, 4.0, 9.0, 100.0]
    assert load_metric("spearmanr").compute(predictions=x, references=y)["spearmanr"] == pytest.approx(1.0)
    assert load_metric("spearmanr").compute(predictions=x[::-1], references=y)["spearmanr"] == pytest.approx(-1.0)
    assert load_metric("pearsonr").compute(predictions=x, references=y)["pearsonr"] < 0.9


@pytest.mark.parametrize("num_classes", [2, 5])
def test_accuracy_is_the_fraction_correct(num_classes):
    predictions, references = class_ids(num_classes)
    result = load_metric("accuracy").compute(predictions=predictions, references=references)
    assert result["accuracy"] == pytest.approx(sum(int(p == r) for p, r in zip(predictions, references)) / len(references))
    count = load_metric("accuracy").compute(predictions=predictions, references=references, normalize=False)["accuracy"]
    assert count == sum(int(p == r) for p, r in zip(predictions, references))


@pytest.mark.parametrize(("num_classes", "average"), [(2, "binary"), (5, "macro"), (5, "micro"), (5, "weighted")])
def test_f1_matches_the_confusion_matrix(num_classes, average):
    predictions, references = class_ids(num_classes, seed=1)
    result = load_metric("f1").compute(predictions=predictions, references=references, average=average)
    assert result["f1"] == pytest.approx(naive_f1(references, predictions, num_classes, average))


def test_f1_per_class_and_pos_label():
    predictions, references = class_ids(3, seed=2)
    f1 = load_metric("f1")
    per_class = f1.compute(predictions=predictions, references=references, average=None)["f1"]
    assert per_class == pytest.approx(naive_f1_per_class(confusion(references, predictions, 3)))
    binary_predictions, binary_references = class_ids(2, seed=3)
    result = f1.compute(predictions=binary_predictions, references=binary_references, pos_label=0)
    assert result["f1"] == pytest.approx(naive_f1(binary_references, binary_predictions, 2, "binary", pos_label=0))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_matthews_correlation_matches_gorodkins_formula(num_classes):
    predictions, references = class_ids(num_classes, seed=4)
    result = load_metric("matthews_correlation").compute(predictions=predictions, references=references)
    assert result["matthews_correlation"] == pytest.approx(naive_mcc(references, predictions, num_classes))


@pytest.mark.parametrize(("name", "correlation"), [
    ("pearsonr", naive_pearson),
    ("spearmanr", lambda x, y: naive_pearson(average_ranks(list(x)), average_ranks(list(y)))),
])
def test_correlations_match_their_definitions_with_ties(name, correlation):
    predictions, references = real_scores()  # references have many ties
    expected = correlation(references, predictions)
    result = load_metric(name).compute(predictions=predictions, references=references, return_pvalue=True)
    assert result[name] == pytest.approx(expected)
    assert result["pvalue"] == pytest.approx(two_sided_t_pvalue(expected, len(references)), rel=1e-6)
    assert set(load_metric(name).compute(predictions=predictions, references=references)) == {name}


def test_incremental_batches_equal_one_shot():
    predictions, references = class_ids(3, seed=5)
    metric = load_metric("f1", keep_in_memory=True)
    for start in range(0, len(predictions), 64):
        metric.add_batch(predictions=predictions[start : start + 64], references=references[start : start + 64])
    assert metric.compute(average="macro")["f1"] == pytest.approx(naive_f1(references, predictions, 3, "macro"))


def test_unknown_metric_lists_the_available_ones():
    with pytest.raises(UserError, match="unknown metric 'bleu'.*accuracy, f1, matthews_correlation"):
        load_metric("bleu")


def test_compute_metrics_keys_and_values(no_network):
    predictions, references = class_ids(3, seed=6)
    scores = compute_metrics(
        ["accuracy", "f1_macro", "matthews_correlation"], torch.as_tensor(predictions), references.tolist()
    )
    assert scores == pytest.approx(
        {
            "accuracy": float(np.mean(predictions == references)),
            "f1_macro": naive_f1(references, predictions, 3, "macro"),
            "matthews_correlation": naive_mcc(references, predictions, 3),
        }
    )
    sts_predictions, sts_references = real_scores(seed=7)
    scores = compute_metrics(["pearson", "spearman"], sts_predictions, sts_references)
    assert scores["pearson"] == pytest.approx(naive_pearson(sts_references, sts_predictions))
    assert scores["spearman"] == pytest.approx(naive_pearson(average_ranks(list(sts_references)), average_ranks(list(sts_predictions))))
    assert set(SCORES) == {"accuracy", "f1", "f1_macro", "f1_micro", "matthews_correlation", "pearson", "spearman"}


def test_compute_metrics_rejects_unknown_scores():
    with pytest.raises(UserError, match="unknown score.*'spearmanr'.*choose from: accuracy"):
        compute_metrics(["accuracy", "spearmanr"], [0.1], [0.2])


def test_package_data_glob_covers_every_module():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    package_data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = package_data["nlpssl.metrics"]
    for name in SHIPPED:
        relative = f"{name}/{name}.py"
        assert (METRICS_DIR / relative).is_file()
        assert any(fnmatch(relative, pattern) for pattern in patterns), relative


def test_confusion_matrix_png(tmp_path):
    gold, predicted = [0, 1, 2, 2, 1], [0, 2, 2, 2, 1]
    path = save_confusion_matrix_png(gold, predicted, ["neg", "neu", "pos"], tmp_path / "sub" / "cm.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000
    height, width, _ = matplotlib.image.imread(path).shape
    assert height > 100 and width > 100


def test_confusion_matrix_rejects_ids_without_names(tmp_path):
    with pytest.raises(UserError, match="only 2 label_names"):
        save_confusion_matrix_png([0, 1, 2], [0, 1, 1], ["neg", "pos"], tmp_path / "cm.png")
