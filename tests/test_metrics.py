"""The offline metric modules: parity with scikit-learn / SciPy, no network, naming, plots."""

from __future__ import annotations

import os
import socket
from fnmatch import fnmatch
from pathlib import Path

import evaluate
import matplotlib.image
import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

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


@pytest.mark.parametrize("num_classes", [2, 5])
def test_accuracy_matches_sklearn(num_classes):
    predictions, references = class_ids(num_classes)
    result = load_metric("accuracy").compute(predictions=predictions, references=references)
    assert result["accuracy"] == pytest.approx(accuracy_score(references, predictions))


@pytest.mark.parametrize(("num_classes", "average"), [(2, "binary"), (5, "macro"), (5, "micro"), (5, "weighted")])
def test_f1_matches_sklearn(num_classes, average):
    predictions, references = class_ids(num_classes, seed=1)
    result = load_metric("f1").compute(predictions=predictions, references=references, average=average)
    assert result["f1"] == pytest.approx(f1_score(references, predictions, average=average))


def test_f1_per_class_and_pos_label():
    predictions, references = class_ids(3, seed=2)
    f1 = load_metric("f1")
    per_class = f1.compute(predictions=predictions, references=references, average=None)["f1"]
    assert per_class == pytest.approx(list(f1_score(references, predictions, average=None)))
    binary_predictions, binary_references = class_ids(2, seed=3)
    result = f1.compute(predictions=binary_predictions, references=binary_references, pos_label=0)
    assert result["f1"] == pytest.approx(f1_score(binary_references, binary_predictions, pos_label=0))


@pytest.mark.parametrize("num_classes", [2, 4])
def test_matthews_correlation_matches_sklearn(num_classes):
    predictions, references = class_ids(num_classes, seed=4)
    result = load_metric("matthews_correlation").compute(predictions=predictions, references=references)
    assert result["matthews_correlation"] == pytest.approx(matthews_corrcoef(references, predictions))


@pytest.mark.parametrize(("name", "reference_fn"), [("pearsonr", pearsonr), ("spearmanr", spearmanr)])
def test_correlations_match_scipy(name, reference_fn):
    predictions, references = real_scores()
    expected = reference_fn(references, predictions)
    result = load_metric(name).compute(predictions=predictions, references=references, return_pvalue=True)
    assert result[name] == pytest.approx(expected.statistic)
    assert result["pvalue"] == pytest.approx(expected.pvalue)
    assert set(load_metric(name).compute(predictions=predictions, references=references)) == {name}


def test_incremental_batches_equal_one_shot():
    predictions, references = class_ids(3, seed=5)
    metric = load_metric("f1", keep_in_memory=True)
    for start in range(0, len(predictions), 64):
        metric.add_batch(predictions=predictions[start : start + 64], references=references[start : start + 64])
    assert metric.compute(average="macro")["f1"] == pytest.approx(f1_score(references, predictions, average="macro"))


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
            "accuracy": accuracy_score(references, predictions),
            "f1_macro": f1_score(references, predictions, average="macro"),
            "matthews_correlation": matthews_corrcoef(references, predictions),
        }
    )
    sts_predictions, sts_references = real_scores(seed=7)
    scores = compute_metrics(["pearson", "spearman"], sts_predictions, sts_references)
    assert scores["spearman"] == pytest.approx(spearmanr(sts_references, sts_predictions).statistic)
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
