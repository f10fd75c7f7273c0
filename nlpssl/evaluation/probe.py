"""Frozen-feature evaluation for any encoder (text or image): linear probe and kNN.

Shapes: N train examples, M test examples, D feature width, C classes, K neighbours.
Features are (N, D) float tensors and labels (N,) integer class ids in ``range(C)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F

from nlpssl.errors import UserError

OPTIMIZERS = ("adamw", "lbfgs")


def extract_features(
    encode_batch: Callable[[Any], torch.Tensor],
    loader: Iterable,
    label_key: str = "labels",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``encode_batch`` over every batch without autograd; collect features and labels on CPU.

    The caller puts the model in ``eval()`` mode and on its device; this
    function only loops. The returned tensors are ordinary (not inference)
    tensors, so they can feed a trainable probe.

    Args:
        encode_batch: maps one batch to (B, D) features, e.g. mean-pooled hidden states.
        loader: yields dict batches holding ``label_key``, or ``(inputs, labels)`` tuples.
        label_key: the labels' key in dict batches.

    Returns:
        features (N, D) and labels (N,), both on CPU.

    Example::

        model.eval()
        encode = lambda batch: model(batch["input_ids"], batch["attention_mask"]).last_hidden_state[:, 0]
        train_x, train_y = extract_features(encode, train_loader)
    """
    feature_chunks, label_chunks = [], []
    with torch.inference_mode():
        for batch in loader:
            feature_chunks.append(encode_batch(batch).detach().cpu())  # (B, D)
            label_chunks.append(torch.as_tensor(_batch_labels(batch, label_key)).cpu())  # (B,)
    if not feature_chunks:
        raise UserError("extract_features got an empty loader; check the dataset split and its size")
    # concatenating outside inference mode turns inference tensors into normal ones
    return torch.cat(feature_chunks), torch.cat(label_chunks)


def _batch_labels(batch: Any, label_key: str) -> Any:
    """The labels of a dict batch (``batch[label_key]``) or of an ``(inputs, labels)`` tuple."""
    if isinstance(batch, Mapping):
        if label_key not in batch:
            raise UserError(f"batch has no {label_key!r} entry (keys: {', '.join(batch)}); pass label_key=")
        return batch[label_key]
    return batch[1]


def linear_probe(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    epochs: int = 100,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    batch_size: int | None = None,
    optimizer: str = "adamw",
    seed: int = 0,
) -> dict[str, float]:
    """Fit a logistic-regression head on frozen features; report train and test accuracy.

    The standard linear evaluation of self-supervised representations (e.g.
    SimCLR, Chen et al. 2020; MoCo, He et al. 2020), on CPU-sized data.
    Features are standardised with the train mean and std; the head starts at
    zero, so with ``seed`` fixing the minibatch order the result is reproducible.

    Args:
        train_features: (N, D) frozen features; train_labels: (N,) class ids.
        test_features: (M, D); test_labels: (M,).
        epochs: passes over the train set ("adamw"), or L-BFGS iterations ("lbfgs").
        lr: AdamW learning rate (default 1e-2) or L-BFGS initial step (default 1.0).
        weight_decay: AdamW decoupled decay of the weights (not the bias); for
            "lbfgs", the L2 penalty ``weight_decay / 2 * ||W||^2``.
        batch_size: AdamW minibatch size; None for full batch. Must be None for "lbfgs".
        optimizer: "adamw" or "lbfgs" (full batch, strong-Wolfe line search).
        seed: seeds the minibatch shuffle (a private generator; global RNG untouched).

    Returns:
        ``{"accuracy": test accuracy, "train_accuracy": train accuracy}``.

    Example::

        train_x, train_y = extract_features(encode, train_loader)
        test_x, test_y = extract_features(encode, test_loader)
        linear_probe(train_x, train_y, test_x, test_y)["accuracy"]
    """
    if optimizer not in OPTIMIZERS:
        raise UserError(f"unknown probe optimizer {optimizer!r}; choose from: {', '.join(OPTIMIZERS)}")
    if lr is None:
        lr = 1e-2 if optimizer == "adamw" else 1.0
    if optimizer == "lbfgs" and batch_size is not None:
        raise UserError("the lbfgs probe is full batch; leave batch_size=None or use optimizer='adamw'")
    # the caller may hold inference tensors or sit inside inference_mode; the head needs autograd
    with torch.inference_mode(False), torch.enable_grad():
        train_x, test_x = _standardise(train_features.float(), test_features.float())  # (N, D), (M, D)
        train_y = train_labels.to(train_x.device, torch.long).clone()  # (N,); clone: never an inference tensor
        test_y = test_labels.to(test_x.device, torch.long).clone()  # (M,)
        num_classes = int(max(train_y.max(), test_y.max())) + 1
        # skip_init: a zero start needs no random init, and the global RNG stays untouched
        head = torch.nn.utils.skip_init(torch.nn.Linear, train_x.shape[1], num_classes, device=train_x.device)
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
        if optimizer == "adamw":
            _fit_adamw(head, train_x, train_y, epochs, lr, weight_decay, batch_size, seed)
        else:
            _fit_lbfgs(head, train_x, train_y, epochs, lr, weight_decay)
        with torch.no_grad():
            return {
                "accuracy": _accuracy(head(test_x), test_y),
                "train_accuracy": _accuracy(head(train_x), train_y),
            }


def _standardise(train: torch.Tensor, test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-mean, unit-std features, with statistics from the train set only."""
    mean = train.mean(dim=0)  # (D,)
    std = train.std(dim=0).clamp_min(1e-6)  # (D,); constant features stay finite
    return (train - mean) / std, (test - mean) / std


def _fit_adamw(head, features, labels, epochs, lr, weight_decay, batch_size, seed) -> None:
    """Minibatch (or full-batch) AdamW on the cross-entropy; the bias is not decayed."""
    groups = [{"params": [head.weight], "weight_decay": weight_decay}, {"params": [head.bias], "weight_decay": 0.0}]
    optim = torch.optim.AdamW(groups, lr=lr)
    generator = torch.Generator().manual_seed(seed)
    num_examples = features.shape[0]
    batch_size = batch_size or num_examples
    for _ in range(epochs):
        order = torch.randperm(num_examples, generator=generator)  # (N,)
        for start in range(0, num_examples, batch_size):
            index = order[start : start + batch_size]  # (B,)
            loss = F.cross_entropy(head(features[index]), labels[index])
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()


def _fit_lbfgs(head, features, labels, max_iter, lr, weight_decay) -> None:
    """Full-batch L-BFGS on cross-entropy plus an L2 penalty on the weights (not the bias)."""
    optim = torch.optim.LBFGS(head.parameters(), lr=lr, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optim.zero_grad(set_to_none=True)
        loss = F.cross_entropy(head(features), labels) + weight_decay / 2 * head.weight.square().sum()
        loss.backward()
        return loss

    optim.step(closure)


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of rows of (N, C) logits whose argmax equals the (N,) label."""
    return (logits.argmax(dim=-1) == labels).float().mean().item()


@torch.inference_mode()
def knn_accuracy(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    test_features: torch.Tensor,
    test_labels: torch.Tensor,
    k: int = 20,
    temperature: float = 0.07,
    chunk_size: int = 1024,
) -> float:
    """Weighted cosine kNN classification accuracy, the InstDisc / DINO kNN monitor.

    Wu et al. 2018 (InstDisc), Caron et al. 2021 (DINO). Each test example
    finds its ``k`` most cosine-similar train examples; neighbour ``i`` with
    similarity ``s_i`` votes for its class with weight ``exp(s_i / temperature)``;
    the class with the largest summed vote wins. A low temperature lets the
    nearest neighbours dominate.

    Args:
        train_features: (N, D); train_labels: (N,) class ids.
        test_features: (M, D); test_labels: (M,).
        k: neighbours per test example (clipped to N).
        temperature: the vote weight's temperature.
        chunk_size: test rows scored at once; bounds memory at (chunk_size, N).

    Example::

        train_x, train_y = extract_features(encode, train_loader)
        test_x, test_y = extract_features(encode, test_loader)
        knn_accuracy(train_x, train_y, test_x, test_y, k=20)
    """
    train = F.normalize(train_features.float(), dim=-1)  # (N, D)
    test = F.normalize(test_features.float(), dim=-1)  # (M, D)
    train_labels = train_labels.long().to(train.device)  # (N,)
    test_labels = test_labels.long().to(test.device)  # (M,)
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    k = min(k, train.shape[0])
    correct = 0
    for start in range(0, test.shape[0], chunk_size):
        similarity = test[start : start + chunk_size] @ train.T  # (B, N)
        top_similarity, top_index = similarity.topk(k, dim=-1)  # (B, K), (B, K)
        weights = (top_similarity / temperature).exp()  # (B, K)
        votes = torch.zeros(similarity.shape[0], num_classes, device=similarity.device)  # (B, C)
        votes.scatter_add_(1, train_labels[top_index], weights)
        correct += (votes.argmax(dim=-1) == test_labels[start : start + chunk_size]).sum().item()
    return correct / test.shape[0]
