"""The lightly reference side of the benchmarks and parity tests.

lightly imports torchvision. The PyPI torchvision wheel is a CUDA build whose
``_C.so`` cannot load with a CPU torch, so ``import torchvision`` dies while
registering fake kernels for ops that were never defined
(``operator torchvision::nms does not exist``). Everything lightly needs from
it (PIL transforms) is pure Python, so we import torchvision without those
registrations first (:func:`nlpssl._torchvision.import_torchvision`, the one
copy of that workaround; it does nothing where torchvision imports normally).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from nlpssl._torchvision import import_torchvision


def import_lightly() -> ModuleType:
    """Import and return ``lightly``, working around a torchvision whose C++ ops cannot load.

    Example::

        lightly = import_lightly()
        loss = lightly.loss.NTXentLoss(temperature=0.5)(z1, z2)
    """
    import_torchvision()
    return importlib.import_module("lightly")


# ---- SimCLR as lightly's documentation shows it (benchmarks/vision_throughput.py, benchmarks/vision_knn.py) ----
#
# Shapes: N images, B batch, C channels, S image side, D backbone width, E projection width.

SIMCLR_PROJECTION_DIM = 128
SIMCLR_TEMPERATURE = 0.5  # NTXentLoss's default, as lightly's SimCLR examples use it


def simclr_transform(image_size: int = 32):
    """lightly's ``SimCLRTransform`` set to nlpssl's ``simclr`` preset (nlpssl.data.augment.SIMCLR_VIEW).

    Two of lightly's defaults differ from the preset and are set here:
    ``cj_strength=0.5`` (its defaults 0.8/0.8/0.8/0.2 are the ImageNet jitter;
    x0.5 gives the CIFAR values 0.4/0.4/0.4/0.1 that lightly's docstring recommends
    for small images) and ``gaussian_blur=0.0`` (SimCLR drops blur at 32 px;
    lightly blurs with p 0.5 by default). The rest are lightly's defaults and
    equal the preset: crop scale (0.08, 1) ratio (3/4, 4/3), flip 0.5, jitter p 0.8,
    grayscale 0.2, ImageNet mean/std. Above 32 px both blur with p 0.5 and sigma
    0.1-2, but lightly's PIL blur sizes its kernel from sigma, nlpssl's is 10% of the side.
    """
    from lightly.transforms import SimCLRTransform

    blur = 0.5 if image_size > 32 else 0.0  # the preset blurs only above CIFAR size
    return SimCLRTransform(input_size=image_size, cj_strength=0.5, gaussian_blur=blur)


class InMemoryImages:
    """A map-style torch dataset over a decoded uint8 array: a PIL image per item, then ``transform``.

    What a user's dataset of in-memory images looks like (lightly's docs accept
    any dataset returning ``(views, label)``). ``images``: (N, C, S, S) uint8;
    ``labels``: (N,) or None (then every label is 0).
    """

    def __init__(self, images, labels=None, transform=None) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int):
        from PIL import Image

        pixels = self.images[index].permute(1, 2, 0).numpy()  # (S, S, C) uint8
        image = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
        label = int(self.labels[index]) if self.labels is not None else 0
        return self.transform(image), label


def simclr_loader(images, labels, image_size: int, batch_size: int, workers: int, seed: int = 0):
    """lightly's documented input pipeline: per-image ``SimCLRTransform`` in a shuffling torch ``DataLoader``.

    Workers persist across epochs (``persistent_workers``), so their start-up is
    paid once. Each batch is ``([view1 (B, C, S, S), view2 (B, C, S, S)], labels (B,))``.
    """
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(
        InMemoryImages(images, labels, simclr_transform(image_size)), batch_size=batch_size, shuffle=True,
        drop_last=True, num_workers=workers, persistent_workers=workers > 0,
        generator=torch.Generator().manual_seed(seed),
    )


def endless(loader):
    """The batches of ``loader``, epoch after epoch (one iterator per epoch; workers persist)."""
    while True:
        yield from loader


def simclr_model(backbone, projection_dim: int = SIMCLR_PROJECTION_DIM):
    """lightly's SimCLR module from its docs: ``backbone`` (B, C, S, S) -> (B, D), then ``SimCLRProjectionHead(D, D, E)``.

    The head is Linear(D, D) - BatchNorm - ReLU - Linear(D, E) - BatchNorm, as
    nlpssl's SimCLR head (``MLPHead(..., output_norm=True)``).
    """
    from lightly.models.modules import SimCLRProjectionHead
    from torch import nn

    class SimCLR(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.projection_head = SimCLRProjectionHead(backbone.feature_dim, backbone.feature_dim, projection_dim)

        def forward(self, images):
            return self.projection_head(self.backbone(images).flatten(start_dim=1))  # (B, E)

    return SimCLR()


def adamw(parameters, lr: float, betas=(0.9, 0.98), eps: float = 1e-6, weight_decay: float = 0.0):
    """torch AdamW over ``parameters`` (tensors or groups), fused where torch has the kernel for the device."""
    import torch

    parameters = list(parameters)
    try:
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(parameters, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def simclr_train_step(model, criterion, optimizer, views, device, max_grad_norm: float = 1.0):
    """One step of lightly's documented SimCLR loop: a forward per view, ``NTXentLoss``, backward, clip, step.

    ``views``: the DataLoader's ``[view1, view2]``, each (B, C, S, S) float. The
    clip at ``max_grad_norm`` is nlpssl's loop's (lightly's example has none).
    Returns the loss tensor (detached).
    """
    import torch

    x0, x1 = (view.to(device, non_blocking=True) for view in views)
    z0, z1 = model(x0), model(x1)  # 2 x (B, E)
    loss = criterion(z0, z1)
    loss.backward()
    if max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.detach()


def train_simclr(backbone, images, labels, train, image_size: int, workers: int, device,
                 temperature: float = SIMCLR_TEMPERATURE, projection_dim: int = SIMCLR_PROJECTION_DIM):
    """Train ``backbone`` with lightly's SimCLR for ``train.max_steps`` steps; returns the backbone.

    A plain loop over :func:`simclr_loader`, as lightly's docs show, with
    nlpssl's optimizer settings from ``train`` (an ``nlpssl.train.TrainConfig``):
    torch AdamW over ``nlpssl.optim.parameter_groups``, the learning rate of
    ``nlpssl.optim.learning_rate`` (warmup then cosine) set each step, clipping
    at ``train.max_grad_norm``. ``images``: (N, C, S, S) uint8; ``labels``: (N,) or None.

    Example::

        backbone = train_simclr(ResNet18(width=32), images.images, images.labels, TrainConfig(max_steps=200), 32, 2, "cpu")
    """
    import time

    from lightly.loss import NTXentLoss

    from nlpssl.optim import learning_rate, parameter_groups

    model = simclr_model(backbone, projection_dim).to(device).train()
    criterion = NTXentLoss(temperature=temperature)
    optimizer = adamw(parameter_groups(model, train.weight_decay), train.lr, (train.adam_beta1, train.adam_beta2), train.adam_eps)
    loader = simclr_loader(images, labels, image_size, train.batch_size, workers, seed=train.seed)
    batches, started = endless(loader), time.perf_counter()
    for step in range(train.max_steps):
        lr = learning_rate(step, train.lr, train.warmup_steps, train.max_steps, train.min_lr_ratio)
        for group in optimizer.param_groups:
            group["lr"] = lr
        views, _ = next(batches)
        loss = simclr_train_step(model, criterion, optimizer, views, device, train.max_grad_norm)
        done = step + 1
        if done % train.log_every == 0 or done == train.max_steps:
            rate = done * train.batch_size / (time.perf_counter() - started)
            print(f"lightly simclr: step {done}/{train.max_steps} loss {loss.item():.4f} lr {lr:.2e} {rate:,.0f} images/s", flush=True)
    batches.close()
    del loader  # its persistent workers end with it
    return model.backbone
