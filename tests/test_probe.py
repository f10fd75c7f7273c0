"""Linear probe, weighted kNN and feature extraction on synthetic features."""

from __future__ import annotations

import pytest
import torch

from nlpssl.errors import UserError
from nlpssl.evaluation.probe import extract_features, knn_accuracy, linear_probe


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Run this module's tests on one torch thread (see conftest)."""


def gaussian_blobs(num_classes: int, per_class: int, dim: int = 16, spread: float = 0.5, seed: int = 0):
    """(N, D) points around random class centres (distinct directions, norm ~3*sqrt(D)) and (N,) labels."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=generator) * 3  # (C, D)
    labels = torch.arange(num_classes).repeat_interleave(per_class)  # (N,)
    features = centres[labels] + spread * torch.randn(len(labels), dim, generator=generator)  # (N, D)
    return features, labels


def split(features, labels, seed: int = 0):
    """Random half / half train-test split."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train, test = order[: len(order) // 2], order[len(order) // 2 :]
    return features[train], labels[train], features[test], labels[test]


@pytest.mark.parametrize(("optimizer", "batch_size"), [("adamw", None), ("adamw", 64), ("lbfgs", None)])
def test_linear_probe_separates_gaussian_blobs(optimizer, batch_size):
    features, labels = gaussian_blobs(num_classes=4, per_class=100, spread=1.0)
    result = linear_probe(*split(features, labels), epochs=50, optimizer=optimizer, batch_size=batch_size)
    assert result["accuracy"] > 0.95 and result["train_accuracy"] > 0.95


def test_linear_probe_is_chance_on_random_labels():
    generator = torch.Generator().manual_seed(1)
    features = torch.randn(1200, 16, generator=generator)
    labels = torch.randint(0, 4, (1200,), generator=generator)
    result = linear_probe(*split(features, labels), epochs=50)
    assert 0.15 < result["accuracy"] < 0.35


def test_linear_probe_is_reproducible_and_keeps_global_rng():
    data = split(*gaussian_blobs(num_classes=3, per_class=30, spread=3.0))
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = linear_probe(*data, epochs=5, batch_size=8, seed=7)
    assert torch.rand(1) == expected_next
    assert linear_probe(*data, epochs=5, batch_size=8, seed=7) == first


def test_linear_probe_trains_inside_inference_mode_on_inference_tensors():
    features, labels = gaussian_blobs(num_classes=2, per_class=40)
    with torch.inference_mode():
        data = split(features.clone(), labels.clone())
        assert data[0].is_inference()
        result = linear_probe(*data, epochs=20)
    assert result["accuracy"] > 0.95


def test_linear_probe_rejects_bad_options():
    data = split(*gaussian_blobs(num_classes=2, per_class=4))
    with pytest.raises(UserError, match="choose from: adamw, lbfgs"):
        linear_probe(*data, optimizer="sgd")
    with pytest.raises(UserError, match="full batch"):
        linear_probe(*data, optimizer="lbfgs", batch_size=4)


def test_knn_is_perfect_on_well_separated_clusters():
    features, labels = gaussian_blobs(num_classes=5, per_class=40, spread=0.1)
    assert knn_accuracy(*split(features, labels), k=20, chunk_size=16) == 1.0


def naive_knn_predictions(train_x, train_y, test_x, k, temperature):
    """One test row at a time: sort cosine similarities, sum exp(s / T) per class."""
    predictions = []
    for query in test_x:
        similarity = torch.nn.functional.cosine_similarity(query[None], train_x)  # (N,)
        nearest = similarity.argsort(descending=True)[:k]
        votes = {}
        for index in nearest.tolist():
            label = int(train_y[index])
            votes[label] = votes.get(label, 0.0) + torch.exp(similarity[index] / temperature).item()
        predictions.append(max(votes, key=votes.get))
    return torch.tensor(predictions)


@pytest.mark.parametrize(("k", "temperature"), [(1, 0.07), (5, 0.07), (15, 1.0), (500, 0.5)])
def test_knn_matches_a_naive_weighted_vote(k, temperature):
    generator = torch.Generator().manual_seed(k)
    train_x, test_x = torch.randn(60, 8, generator=generator), torch.randn(25, 8, generator=generator)
    train_y, test_y = torch.randint(0, 3, (60,), generator=generator), torch.randint(0, 3, (25,), generator=generator)
    expected = (naive_knn_predictions(train_x, train_y, test_x, k, temperature) == test_y).float().mean().item()
    assert knn_accuracy(train_x, train_y, test_x, test_y, k=k, temperature=temperature, chunk_size=7) == pytest.approx(
        expected
    )


def test_extract_features_from_dict_and_tuple_batches():
    encoder = torch.nn.Linear(4, 3)
    inputs, labels = torch.randn(10, 4), torch.arange(10)
    dict_loader = [{"x": inputs[i : i + 4], "labels": labels[i : i + 4]} for i in range(0, 10, 4)]
    features, got_labels = extract_features(lambda batch: encoder(batch["x"]), dict_loader)
    assert features.shape == (10, 3) and torch.equal(got_labels, labels)
    assert torch.allclose(features, encoder(inputs).detach())
    assert not features.is_inference() and not features.requires_grad

    tuple_loader = [(inputs[i : i + 3], labels[i : i + 3].tolist()) for i in range(0, 10, 3)]
    features, got_labels = extract_features(lambda batch: encoder(batch[0]), tuple_loader)
    assert features.shape == (10, 3) and torch.equal(got_labels, labels)


def test_extract_features_errors():
    with pytest.raises(UserError, match="pass label_key="):
        extract_features(lambda batch: batch["x"], [{"x": torch.zeros(2, 3), "label": torch.zeros(2)}])
    with pytest.raises(UserError, match="empty loader"):
        extract_features(lambda batch: batch, [])
