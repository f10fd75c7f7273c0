"""The vision pretraining recipe: config sections, checks, the objective for each method, evaluation at the end."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from nlpssl.atomic import atomic_write_text
from nlpssl.errors import UserError
from nlpssl.models.vision import BackboneSpec, build_backbone, build_mae, check_spec
from nlpssl.train import TrainConfig

METHODS = ("simclr", "moco", "byol", "simsiam", "mae", "rotation", "jigsaw", "colorization")
DEFAULT_AUGMENT = {"simclr": "simclr", "moco": "simclr", "byol": "byol", "simsiam": "simclr"}  # the rest: "mae" (crop, flip)
CONTRASTIVE = ("simclr", "moco")


@dataclass
class ImageDataConfig:
    """Where images come from (see :func:`nlpssl.data.images.load_image_splits`)."""

    source: str = "digits"  # built-in digits, a folder (root/<class>/*.png or train/, test/), or a .tar(.gz) such as CIFAR-10's
    image_size: int = 32
    channels: int = 3
    cache_dir: str | None = None  # decoded arrays; default ~/.cache/nlpssl/images
    bad_images: Literal["skip", "error"] = "skip"
    test_fraction: float = 0.2  # held out for kNN when the source has no test split
    max_train_images: int | None = None  # a seeded subset for quick runs


@dataclass
class VisionModelConfig:
    """The backbone: ResNet-18 (CIFAR stem) for every method but MAE, whose ViT comes from transformers."""

    architecture: Literal["resnet18", "vit"] = "resnet18"
    width: int = 64
    patch_size: int = 4
    hidden_size: int = 192
    num_layers: int = 6
    num_heads: int = 3
    decoder_hidden_size: int = 128
    decoder_num_layers: int = 2
    decoder_num_heads: int = 4
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True  # MAE: reconstruct per-patch normalised pixels (the paper's choice) or the pixels
    sync_batchnorm: bool = True  # with several GPU processes (torch's SyncBatchNorm needs a GPU)


@dataclass
class MethodConfig:
    """The objective and its own settings (each recipe in configs/vision/ sets the paper's values)."""

    name: Literal["simclr", "moco", "byol", "simsiam", "mae", "rotation", "jigsaw", "colorization"] = "simclr"
    augment: str = ""  # a preset of nlpssl.data.augment; empty: the method's own
    temperature: float = 0.5
    gather: bool = True  # SimCLR: negatives from every process
    projection_dim: int = 128
    hidden_dim: int = 1024  # BYOL's projector / predictor hidden width
    queue_size: int = 4096  # MoCo: a multiple of the global batch
    momentum: float = 0.99  # MoCo's key encoder; BYOL: the base of the cosine schedule
    num_permutations: int = 100  # jigsaw


@dataclass
class VisionEvalConfig:
    """kNN (k=200, T=0.1, as vision SSL libraries report) every train.eval_every steps; linear probe at the end."""

    knn_k: int = 200
    knn_temperature: float = 0.1
    max_bank_images: int | None = None  # a seeded subset of the training split votes (None: all)
    max_test_images: int | None = None
    probe_epochs: int = 100  # 0: no linear probe
    batch_size: int = 256


@dataclass
class VisionRecipe:
    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: VisionModelConfig = field(default_factory=VisionModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    eval: VisionEvalConfig = field(default_factory=VisionEvalConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(output_dir="outputs/vision"))


def backbone_spec(cfg: VisionRecipe) -> BackboneSpec:
    """The backbone of this recipe, checked (one-line errors for sizes that cannot work)."""
    model = cfg.model
    spec = BackboneSpec(
        architecture=model.architecture, channels=cfg.data.channels, image_size=cfg.data.image_size, width=model.width,
        patch_size=model.patch_size, hidden_size=model.hidden_size, num_layers=model.num_layers, num_heads=model.num_heads,
        decoder_hidden_size=model.decoder_hidden_size, decoder_num_layers=model.decoder_num_layers,
        decoder_num_heads=model.decoder_num_heads, mask_ratio=model.mask_ratio, norm_pix_loss=model.norm_pix_loss,
    )
    if cfg.data.channels == 1:
        spec.mean, spec.std = (0.5,), (0.25,)
    check_spec(spec)
    return spec


def check_recipe(cfg: VisionRecipe, num_processes: int) -> None:
    """Reject what cannot train, before anything is written: one line each, saying what to change."""
    method, train = cfg.method, cfg.train
    wants = "vit" if method.name == "mae" else "resnet18"
    if cfg.model.architecture != wants:
        raise UserError(f"method {method.name} trains a {wants} backbone; set --model.architecture={wants}")
    if train.batch_size < 2:
        raise UserError(
            f"train.batch_size={train.batch_size}: {method.name} needs at least 2 images per process "
            "(BatchNorm and the loss compare images within a batch); raise it"
        )
    global_batch = train.batch_size * num_processes
    if method.name == "moco" and (method.queue_size % global_batch or method.queue_size < global_batch * train.grad_accum_steps):
        raise UserError(
            f"method.queue_size={method.queue_size} must be a multiple of the global batch {global_batch} "
            f"(train.batch_size x {num_processes} processes) and hold one optimizer step's keys; "
            f"try {max(1, round(method.queue_size / global_batch)) * global_batch * train.grad_accum_steps}"
        )
    if method.name == "colorization" and (cfg.data.channels != 3 or cfg.data.image_size % 8):
        raise UserError("colorization needs RGB images (data.channels=3) and data.image_size a multiple of 8")
    if method.name == "jigsaw" and cfg.data.image_size < 24:
        raise UserError(f"jigsaw cuts a 3x3 grid: data.image_size={cfg.data.image_size} is too small; use 24 or more")
    if method.name in CONTRASTIVE and method.temperature <= 0:
        raise UserError(f"method.temperature={method.temperature} must be positive")


def build_objective(cfg: VisionRecipe):
    """The objective for ``cfg.method.name``, with its backbone, heads and batch augmentation."""
    from nlpssl.data.augment import BatchViews
    from nlpssl.objectives import byol, colorization, jigsaw, mae, moco, rotation, simclr, simsiam

    spec, method = backbone_spec(cfg), cfg.method
    preset = method.augment or DEFAULT_AUGMENT.get(method.name, "mae")
    num_views = 2 if method.name in DEFAULT_AUGMENT else 1
    views = BatchViews(preset, cfg.data.image_size, num_views=num_views, mean=spec.mean, std=spec.std, channels=spec.channels)
    if method.name == "mae":
        return mae.MAE(build_mae(spec), spec, views)
    backbone = build_backbone(spec)
    if method.name == "simclr":
        return simclr.SimCLR(backbone, spec, views, method.projection_dim, method.temperature, method.gather)
    if method.name == "moco":
        return moco.MoCo(backbone, spec, views, method.queue_size, method.projection_dim, method.temperature, method.momentum)
    if method.name == "byol":
        return byol.BYOL(backbone, spec, views, method.projection_dim, method.hidden_dim, method.momentum)
    if method.name == "simsiam":
        return simsiam.SimSiam(backbone, spec, views, method.hidden_dim, method.hidden_dim // 4)
    if method.name == "rotation":
        return rotation.RotationPrediction(backbone, spec, views)
    if method.name == "jigsaw":
        return jigsaw.Jigsaw(backbone, spec, views, method.num_permutations)
    return colorization.Colorization(backbone, spec, views)


def load_splits(cfg: VisionRecipe) -> dict:
    """Train (and test) images; train capped at ``data.max_train_images`` by a seeded subset."""
    from nlpssl.data.images import load_image_splits

    data = cfg.data
    splits = load_image_splits(
        data.source, data.image_size, data.channels, data.cache_dir, data.bad_images, data.test_fraction, cfg.train.seed,
    )
    if data.max_train_images:
        splits["train"] = subset(splits["train"], data.max_train_images, cfg.train.seed)
    return splits


def subset(images, count: int | None, seed: int):
    """A seeded random subset of at most ``count`` images (all of them when count is None or larger)."""
    if count is None or count >= len(images):
        return images
    return images.select(subset_rows(len(images), count, seed)[0])


def subset_rows(size: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of :func:`subset`'s seeded ``count`` of ``size`` images, and the rows left out, each sorted."""
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed))
    return order[:count].sort().values, order[count:].sort().values


def evaluation_sets(cfg: VisionRecipe, splits: dict) -> tuple | None:
    """(bank, test) for kNN, or None when the images carry no labels or there is no test split."""
    train, test = splits["train"], splits.get("test")
    if train.labels is None or test is None:
        return None
    seed = cfg.train.seed + 1
    return subset(train, cfg.eval.max_bank_images, seed), subset(test, cfg.eval.max_test_images, seed)


def final_evaluation(cfg: VisionRecipe, objective, splits: dict, sets: tuple | None, output_dir: Path) -> dict:
    """kNN and linear probe of the trained backbone, written to ``output_dir/metrics.json``; pictures for MAE."""
    from nlpssl.evaluation.vision import frozen_evaluation

    results: dict = {"method": cfg.method.name, "steps": cfg.train.max_steps}
    device = next(objective.parameters()).device
    objective.eval()
    with torch.no_grad():
        if sets is not None:
            bank, test = sets
            results |= frozen_evaluation(
                objective.features, bank, test, device, cfg.eval.batch_size,
                cfg.eval.knn_k, cfg.eval.knn_temperature, cfg.eval.probe_epochs,
            )
        if cfg.method.name == "mae":
            from nlpssl.evaluation.pictures import save_mae_grid

            save_mae_grid(objective, splits.get("test") or splits["train"], output_dir / "reconstructions.png")
    atomic_write_text(output_dir / "metrics.json", json.dumps(results, indent=2))
    return results


def method_shortcut(argv: list[str], configs: Path) -> list[str]:
    """``--method=NAME`` (or ``--method NAME``) -> ``--config configs/NAME.yaml``; other words unchanged."""
    words, out = list(argv), []
    while words:
        word = words.pop(0)
        if word == "--method" or word.startswith("--method="):
            name = word.partition("=")[2] or (words.pop(0) if words else "")
            if name not in METHODS:
                raise UserError(f"--method={name} is unknown; choose from: {', '.join(METHODS)}")
            if any(w == "--config" or w.startswith("--config=") for w in argv):
                raise UserError("give --method or --config, not both (--method=NAME reads configs/vision/NAME.yaml)")
            out += ["--config", str(configs / f"{name}.yaml")]
        else:
            out.append(word)
    return out


def synchronise_batchnorm(objective, wanted: bool, num_processes: int, device: torch.device):
    """BatchNorm statistics over every process's images when several GPU processes run (and ``wanted``)."""
    if not wanted or num_processes < 2:
        return objective
    if device.type == "cpu":
        print("nlpssl: BatchNorm statistics stay per process on CPU (torch's SyncBatchNorm needs a GPU)")
        return objective
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(objective)
