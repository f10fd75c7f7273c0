"""SimCLR training throughput in images/s: nlpssl's step against lightly's documented pipeline, same model and images.

    python benchmarks/vision_throughput.py [--batch-size 128 --width 64 --rounds 3 --steps 3 --workers 2]

Both sides train SimCLR on the same decoded uint8 array (CIFAR-10 train, 50,000
images at 32 px, from ../shared/data when present, else the built-in digits),
batch B images = 2B views, the same ``nlpssl.models.vision.ResNet18(width)``,
a D-D-128 projection head, NT-Xent at the recipe's temperature, gradient clipping at
1.0 and torch AdamW (fused where torch has the kernel; decay by tensor rank on
both sides, lr 2e-3, weight decay 1e-4, as configs/vision/simclr.yaml).

- nlpssl: what the training loop does each step. The step-indexed loader
  (``nlpssl.sampling.make_loader``, the loop's ``num_workers=0``) gathers B rows
  of the uint8 array and a seed (``ImageCollator``); the ``SimCLR`` objective of
  ``build_objective`` moves them to the device, makes both views with one
  kornia call per view over the batch (``BatchViews("simclr")``), runs one
  forward per view (B images each), ``nt_xent``; backward, clip, step.
- lightly: its documented SimCLR recipe. A torch ``DataLoader`` (``--workers``
  persistent worker processes, shuffle, drop_last) over a dataset that builds a
  PIL image from the same uint8 array in ``__getitem__`` (what a user's dataset
  of in-memory images does) and applies ``SimCLRTransform`` per image; the
  model is the backbone plus ``SimCLRProjectionHead``, called once per view as
  lightly's example does (two forwards of B, as nlpssl), and
  ``NTXentLoss``; backward, clip, step.

Neither side decodes JPEG in the timed loop. ``SimCLRTransform`` is set to the
``simclr`` preset's parameters: lightly's defaults differ in two places,
colour jitter 0.8/0.8/0.8/0.2 (``cj_strength=0.5`` gives 0.4/0.4/0.4/0.1) and
Gaussian blur p 0.5 (off, as SimCLR at 32 px); the rest (crop scale 0.08-1,
ratio 3/4-4/3, flip 0.5, jitter p 0.8, grayscale 0.2, ImageNet mean/std) are
equal. Remaining differences: kornia draws the order of the four jitter
operations once per view and batch, torchvision once per image; kornia crops by
one affine warp (bilinear, no antialias), torchvision resizes each crop with
antialias. Both heads are Linear - BatchNorm - ReLU - Linear - BatchNorm.

Timing: after warm-up the two sides alternate rounds of ``--steps`` steps
(``common.alternate``); each reports its median images/s over rounds. A
DataLoader's workers keep working ahead of the consumer, so between lightly's
rounds they are paused (SIGSTOP/SIGCONT): they neither steal CPU from nlpssl's
rounds nor hand lightly batches made outside its own time. The loader state
carries over, as in one continuous run. Augmentation alone is timed the same
way: nlpssl's loader batch -> device -> both kornia views, against lightly's
DataLoader delivering both augmented views (its own paused loader) -> device.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import sys
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightly_side  # noqa: E402
from common import SHARED_DATA, alternate, print_result  # noqa: E402

from nlpssl.config import load_config  # noqa: E402
from nlpssl.data.images import load_image_splits  # noqa: E402
from nlpssl.objectives.vision_base import ImageCollator  # noqa: E402
from nlpssl.optim import make_optimizer, parameter_groups  # noqa: E402
from nlpssl.recipes.vision import VisionRecipe, build_objective  # noqa: E402
from nlpssl.sampling import make_loader  # noqa: E402

CIFAR10 = SHARED_DATA / "cifar10_jpg" / "cifar10-images.tar.gz"
RECIPE = Path(__file__).resolve().parents[1] / "configs" / "vision" / "simclr.yaml"
WARMUP = 3  # steps per side before timing (common.alternate's default)


def training_images(image_size: int):
    """The train split (uint8 ImageSet) and a name for the JSON line."""
    source = str(CIFAR10) if CIFAR10.is_file() else "digits"
    return load_image_splits(source, image_size)["train"], "cifar10_train" if source != "digits" else "digits"


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PausedWorkers:
    """Stops a DataLoader iterator's worker processes between the rounds of its side (SIGSTOP / SIGCONT)."""

    def __init__(self, iterator) -> None:
        self.iterator = iterator

    def _signal(self, signum: int) -> None:
        for worker in getattr(self.iterator, "_workers", []):  # none with num_workers=0
            if worker.is_alive():
                os.kill(worker.pid, signum)

    def pause(self) -> None:
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        self._signal(signal.SIGCONT)


def only_in_own_rounds(step: Callable[[], float], workers: PausedWorkers, steps_per_round: int) -> Callable[[], float]:
    """``step`` with the loader's workers running only while ``alternate`` runs this side.

    ``alternate`` calls each side WARMUP times, then in blocks of ``steps_per_round``;
    workers resume at a block's first call and pause after its last.
    """
    calls = itertools.count()

    def wrapped() -> float:
        call = next(calls)
        position = call if call < WARMUP else (call - WARMUP) % steps_per_round
        first = position == 0
        last = call == WARMUP - 1 if call < WARMUP else position == steps_per_round - 1
        if first:
            workers.resume()
        units = step()
        if last:
            workers.pause()
        return units

    return wrapped


def nlpssl_side(images, args, device: torch.device) -> tuple[Callable[[], float], Callable[[], float]]:
    """(train step, augmentation step) of nlpssl, each returning the images it processed."""
    cfg = load_config(VisionRecipe, ["--config", str(RECIPE), f"--model.width={args.width}",
                                     f"--data.image_size={args.image_size}", f"--train.batch_size={args.batch_size}"])
    torch.manual_seed(0)
    objective = build_objective(cfg).to(device).train()
    train = cfg.train
    optimizer = make_optimizer(objective, train.lr, train.weight_decay, (train.adam_beta1, train.adam_beta2), train.adam_eps)
    batches = iter(make_loader(images, ImageCollator(), args.batch_size, 0, 1, seed=0, num_workers=train.num_workers))
    augment_batches = iter(make_loader(images, ImageCollator(), args.batch_size, 0, 1, seed=1, num_workers=train.num_workers))

    def on_device(batch: dict) -> dict:
        return {key: value.to(device, non_blocking=True) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}

    def step() -> float:
        batch = on_device(next(batches))
        objective(batch)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronise(device)
        return float(batch["images"].shape[0])

    def augment() -> float:
        batch = on_device(next(augment_batches))
        objective.make_views(batch)  # 2 x (B, C, S, S) float
        synchronise(device)
        return float(batch["images"].shape[0])

    return step, augment


def lightly_side_steps(images, args, device: torch.device) -> tuple[Callable[[], float], Callable[[], float], list]:
    """(train step, augmentation step, their paused loaders) of lightly's documented pipeline."""
    from lightly.loss import NTXentLoss

    from nlpssl.models.vision import ResNet18

    cfg = load_config(VisionRecipe, ["--config", str(RECIPE)])
    train = cfg.train
    torch.manual_seed(0)
    model = lightly_side.simclr_model(ResNet18(images.images.shape[1], args.width), cfg.method.projection_dim).to(device).train()
    criterion = NTXentLoss(temperature=cfg.method.temperature)
    betas = (train.adam_beta1, train.adam_beta2)
    optimizer = lightly_side.adamw(parameter_groups(model, train.weight_decay), train.lr, betas, train.adam_eps)
    loaders = [
        lightly_side.simclr_loader(images.images, images.labels, args.image_size, args.batch_size, args.workers, seed=seed)
        for seed in (0, 1)
    ]
    iterators = [iter(loader) for loader in loaders]  # persistent: one iterator each, re-used for every step
    paused = [PausedWorkers(iterator) for iterator in iterators]
    train_batches, augment_batches = (
        itertools.chain(iterator, lightly_side.endless(loader)) for iterator, loader in zip(iterators, loaders)
    )

    def step() -> float:
        views, _ = next(train_batches)
        lightly_side.simclr_train_step(model, criterion, optimizer, views, device, train.max_grad_norm)
        synchronise(device)
        return float(views[0].shape[0])

    def augment() -> float:
        views, _ = next(augment_batches)
        for view in views:
            view.to(device, non_blocking=True)
        synchronise(device)
        return float(views[0].shape[0])

    for workers in paused:
        workers.pause()  # until lightly's first call: nlpssl's warm-up runs alone
    return only_in_own_rounds(step, paused[0], args.steps), only_in_own_rounds(augment, paused[1], args.steps), paused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=64, help="ResNet-18 first-stage channels (64: the paper's)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="steps per side per round")
    parser.add_argument("--workers", type=int, default=2, help="lightly's DataLoader worker processes")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: the loop's, one per core)")
    args = parser.parse_args()
    lightly_side.import_lightly()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))  # what nlpssl.train does on CPU
    images, data = training_images(args.image_size)
    nlpssl_step, nlpssl_augment = nlpssl_side(images, args, device)
    lightly_step, lightly_augment, paused = lightly_side_steps(images, args, device)
    try:
        train = alternate({"nlpssl": nlpssl_step, "lightly": lightly_step}, args.rounds, args.steps, warmup=WARMUP)
        augment = alternate({"nlpssl": nlpssl_augment, "lightly": lightly_augment}, args.rounds, args.steps, warmup=WARMUP)
    finally:
        for workers in paused:
            workers.resume()  # stopped processes cannot exit
    threads = torch.get_num_threads()
    print(f"SimCLR, ResNet-18 width {args.width}, batch {args.batch_size} x 2 views, {args.image_size} px, {data}, "
          f"device {device.type}, torch threads {threads}, lightly workers {args.workers}")
    print(f"{'':<14}{'nlpssl':>12}{'lightly':>12}{'ratio':>9}   (images/s)")
    for name, rates in (("train step", train), ("augmentation", augment)):
        print(f"{name:<14}{rates['nlpssl']:>12,.1f}{rates['lightly']:>12,.1f}{rates['nlpssl'] / rates['lightly']:>8.2f}x")
    print_result({
        "benchmark": "vision_throughput",
        "nlpssl_images_per_s": round(train["nlpssl"], 2),
        "lightly_images_per_s": round(train["lightly"], 2),
        "ratio": round(train["nlpssl"] / train["lightly"], 3),
        "augment_nlpssl_images_per_s": round(augment["nlpssl"], 2),
        "augment_lightly_images_per_s": round(augment["lightly"], 2),
        "augment_ratio": round(augment["nlpssl"] / augment["lightly"], 3),
        "batch_size": args.batch_size, "width": args.width, "workers": args.workers, "image_size": args.image_size,
        "torch_threads": threads, "device": device.type, "data": data,
    })


if __name__ == "__main__":
    main()
