"""The optimizer and learning rate of the training loop: AdamW (or SGD with momentum) with decay by tensor rank, warmup + cosine."""

from __future__ import annotations

import math

import torch


def learning_rate(step: int, peak: float, warmup_steps: int, max_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warmup to ``peak``, then cosine to ``min_lr_ratio * peak``.

    A pure function of the step: nothing to checkpoint, and a resumed run gets the same values.

    Example::

        learning_rate(0, 1e-3, warmup_steps=10, max_steps=100)   # 1e-4
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    span = max(max_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / span, 1.0)
    floor = peak * min_lr_ratio
    return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def parameter_groups(module: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Decay matrices and embeddings (rank >= 2); never biases or norm scales."""
    params = [p for p in module.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]


OPTIMIZERS = ("adamw", "sgd")


def make_optimizer(
    module: torch.nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.98), eps: float = 1e-6,
    name: str = "adamw", momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """The optimizer over :func:`parameter_groups`.

    ``adamw`` (default): the fused kernel where torch has one for the device.
    ``sgd``: SGD with ``momentum`` and L2 weight decay, what SimSiam and BYOL's
    CIFAR recipes train with (non-contrastive methods can collapse under Adam).

    Example::

        make_optimizer(model, lr=0.03, weight_decay=5e-4, name="sgd")
    """
    groups = parameter_groups(module, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name != "adamw":
        raise ValueError(f"unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
    try:
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)
