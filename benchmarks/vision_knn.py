"""Vision SSL methods on one CPU budget: kNN accuracy on CIFAR-10 test of each pretrained ResNet-18 (MAE: its ViT).

    python benchmarks/vision_knn.py [--steps 400 --batch-size 128 --width 32 --image-size 32 --seeds 0]
    python benchmarks/vision_knn.py --methods simclr,moco --seeds 0 1 2
    python benchmarks/vision_knn.py --quick                       # smoke run: minutes

Budget: every method trains ``--steps`` optimizer steps of ``--batch-size``
CIFAR-10 train images (50,000) at ``--image-size`` px, ResNet-18 (CIFAR stem)
of first-stage width ``--width``; MAE keeps its recipe's ViT (hidden 192, 6
layers, patch 4). Same steps and images per step, not the same FLOPs: MoCo and
BYOL also run a momentum encoder, rotation sees each image four times; the
wall time per method is printed and reported.

- nlpssl methods (simclr moco byol simsiam mae rotation jigsaw colorization):
  the recipe path of scripts/pretrain_vision.py. ``VisionRecipe`` from
  configs/vision/<method>.yaml via ``load_config`` with overrides for data,
  budget and seed (warm-up steps//10, the recipes' 10%; MoCo's queue rounded
  to a multiple of the batch if needed), ``check_recipe``, ``build_objective``,
  ``train()`` into ``--out/<method>/seed<N>``, no evaluation during training.
- random init: SimCLR's recipe objective built with the seed and not trained
  (its backbone in eval mode, BatchNorm at its initial statistics); MAE is
  compared with its own ViT untrained (``random_init_vit``).
- lightly SimCLR: ``SimCLRTransform`` (set to nlpssl's simclr preset: jitter
  strength 0.5, no blur at 32 px), a torch DataLoader with ``--workers``
  workers, the same ``ResNet18(width)``, ``SimCLRProjectionHead(D, D, 128)``,
  ``NTXentLoss()`` at its default temperature 0.5 (as lightly's docs and
  examples use it), a forward per view as lightly's docs; the simclr
  recipe's AdamW (lr, betas, eps, weight decay by tensor rank), learning-rate
  schedule (``nlpssl.optim.learning_rate``), clipping, steps and batch
  (``lightly_side.train_simclr``). The one setting that differs from nlpssl's
  recipe is that temperature: the recipe's 0.2 was chosen on held-out train
  images (``vision_variants.py``); at an equal temperature the two SimCLRs are
  the same algorithm on the same model and tie within seed noise.

Evaluation, after training and for every backbone alike: frozen features,
weighted cosine kNN (k=200, T=0.1; ``frozen_evaluation`` with probe_epochs=0)
of all 10,000 test images against the 50,000-image train split as the bank.
Nothing is chosen on the test split. With several ``--seeds`` each method
reports the mean and standard deviation; ``beats_random`` compares a method's
mean with the random-init mean, ``simclr_beats_lightly`` nlpssl's SimCLR with
lightly's. ``--quick``: 5 steps, a seeded 2,000-image train subset (also the
bank) and 1,000 test images. Needs CIFAR-10 in ../shared/data.

Each finished (method, seed) run is kept in ``--out/runs.jsonl``
(``run_ledger.py``); started again with the same code, arguments, libraries
and CPU, the benchmark reads those back and trains only the rest.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lightly_side  # noqa: E402
from common import SHARED_DATA, print_result  # noqa: E402
from run_ledger import RunLedger, fingerprint  # noqa: E402

from accelerate.utils import set_seed  # noqa: E402

from nlpssl.config import load_config, save_config  # noqa: E402
from nlpssl.data.augment import to_float  # noqa: E402
from nlpssl.evaluation.vision import frozen_evaluation  # noqa: E402
from nlpssl.models.vision import ResNet18  # noqa: E402
from nlpssl.objectives.vision_base import ImageCollator  # noqa: E402
from nlpssl.recipes.common import output_path  # noqa: E402
from nlpssl.recipes.vision import METHODS, VisionRecipe, build_objective, check_recipe, load_splits, subset  # noqa: E402
from nlpssl.train import train  # noqa: E402

CIFAR10 = SHARED_DATA / "cifar10_jpg" / "cifar10-images.tar.gz"
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "vision"
RANDOM, RANDOM_VIT, LIGHTLY = "random_init", "random_init_vit", "lightly_simclr"
QUICK = {"steps": 5, "train_images": 2000, "test_images": 1000}
TEST_SUBSET_SEED = 0  # one fixed test subset (--test-images) for every method and seed


def recipe(method: str, seed: int, args, overrides: tuple[str, ...] = ()) -> VisionRecipe:
    """configs/vision/<method>.yaml with this benchmark's data, budget and seed (then ``overrides``: ``--key=value``)."""
    steps = args.steps
    argv = [
        "--config", str(CONFIGS / f"{method}.yaml"),
        f"--data.source={CIFAR10}", f"--data.image_size={args.image_size}", f"--model.width={args.width}",
        f"--train.max_steps={steps}", f"--train.batch_size={args.batch_size}", f"--train.warmup_steps={steps // 10}",
        f"--train.seed={seed}", f"--train.output_dir={args.out / method / f'seed{seed}'}",
        f"--train.log_every={max(1, steps // 10)}", f"--train.save_every={steps}", f"--train.eval_every={steps}",
        "--eval.probe_epochs=0",
    ]
    if args.train_images:
        argv.append(f"--data.max_train_images={args.train_images}")
    if args.threads:
        argv.append(f"--train.cpu_threads={args.threads}")
    cfg = load_config(VisionRecipe, [*argv, *overrides])
    if method == "moco" and cfg.method.queue_size % args.batch_size:
        cfg.method.queue_size = max(1, round(cfg.method.queue_size / args.batch_size)) * args.batch_size
    return cfg


def knn(encode, bank, test, device: torch.device, cfg: VisionRecipe) -> float:
    """kNN accuracy (x100) of ``encode``'s frozen features: test images voted by the bank."""
    with torch.no_grad():
        results = frozen_evaluation(
            encode, bank, test, device, cfg.eval.batch_size, cfg.eval.knn_k, cfg.eval.knn_temperature, probe_epochs=0,
        )
    return results["knn_accuracy"]


def evaluation_images(cfg: VisionRecipe, args) -> tuple:
    """(train split = the kNN bank, test images), the same for every method."""
    splits = load_splits(cfg)
    return splits["train"], subset(splits["test"], args.test_images, TEST_SUBSET_SEED)


def run_nlpssl(method: str, seed: int, args, bank, test, overrides: tuple[str, ...] = ()) -> tuple[float, float, float]:
    """Train one nlpssl method as scripts/pretrain_vision.py does; (kNN %, train s, kNN s)."""
    cfg = recipe(method, seed, args, overrides)
    check_recipe(cfg, num_processes=1)
    set_seed(seed)
    objective = build_objective(cfg)
    splits = load_splits(cfg)
    shutil.rmtree(cfg.train.output_dir, ignore_errors=True)  # this benchmark's own folder: a run not in the ledger starts over
    save_config(cfg, output_path(cfg.train, "config.yaml"))
    started = time.perf_counter()
    trained = train(objective, splits["train"], ImageCollator(), cfg.train, evaluators=[]).eval()
    trained_s = time.perf_counter() - started
    accuracy = knn(trained.features, bank, test, next(trained.parameters()).device, cfg)
    return accuracy, trained_s, time.perf_counter() - started - trained_s


def run_random(seed: int, args, bank, test, device: torch.device, method: str = "simclr") -> tuple[float, float, float]:
    """A recipe's objective, seeded and untrained: SimCLR's ResNet-18, or MAE's ViT (the baseline of MAE)."""
    cfg = recipe(method, seed, args)
    set_seed(seed)
    objective = build_objective(cfg).to(device).eval()
    started = time.perf_counter()
    return knn(objective.features, bank, test, device, cfg), 0.0, time.perf_counter() - started


def run_lightly(seed: int, args, bank, test, device: torch.device) -> tuple[float, float, float]:
    """lightly's SimCLR (its NTXentLoss default temperature) on the backbone, budget and optimizer of nlpssl's simclr recipe."""
    cfg = recipe("simclr", seed, args)
    train_images = load_splits(cfg)["train"]
    set_seed(seed)
    backbone = ResNet18(cfg.data.channels, cfg.model.width)
    started = time.perf_counter()
    backbone = lightly_side.train_simclr(
        backbone, train_images.images, train_images.labels, cfg.train, cfg.data.image_size, args.workers, device,
        lightly_side.SIMCLR_TEMPERATURE, cfg.method.projection_dim,
    ).eval()
    trained_s = time.perf_counter() - started
    from lightly.transforms.utils import IMAGENET_NORMALIZE  # what SimCLRTransform normalised with

    mean, std = IMAGENET_NORMALIZE["mean"], IMAGENET_NORMALIZE["std"]
    accuracy = knn(lambda images: backbone(to_float(images, mean, std)), bank, test, device, cfg)
    return accuracy, trained_s, time.perf_counter() - started - trained_s


def summary(runs: list[tuple[float, float, float]]) -> dict:
    accuracies = [run[0] for run in runs]
    result = {
        "knn": statistics.mean(accuracies), "per_seed": accuracies,
        "train_s": statistics.mean(run[1] for run in runs), "knn_s": statistics.mean(run[2] for run in runs),
    }
    if len(runs) > 1:
        result["std"] = statistics.stdev(accuracies)
    return result


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """The training budget and seeds every run of this benchmark (and of vision_variants.py) shares."""
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--width", type=int, default=32, help="ResNet-18 first-stage channels")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (default: the loop's, one per core)")


def chosen(parser: argparse.ArgumentParser, value: str, known: list[str], what: str) -> list[str]:
    """The comma-separated ``value`` as a list; a parser error naming any not in ``known``."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def parse_with_quick(parser: argparse.ArgumentParser, quick: dict, help: str) -> argparse.Namespace:
    """Parse with a ``--quick`` flag that sets the arguments in ``quick`` (a smoke run)."""
    parser.add_argument("--quick", action="store_true", help=help)
    args = parser.parse_args()
    if args.quick:
        for key, value in quick.items():
            setattr(args, key, value)
    return args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_budget_arguments(parser)
    parser.add_argument("--methods", default="all", help=f"comma-separated subset of: {','.join(METHODS)}")
    parser.add_argument("--no-lightly", action="store_true", help="skip lightly's SimCLR")
    parser.add_argument("--workers", type=int, default=2, help="lightly's DataLoader worker processes")
    parser.add_argument("--train-images", type=int, default=None, help="a seeded subset of CIFAR-10 train (default: all 50,000)")
    parser.add_argument("--test-images", type=int, default=None, help="a seeded subset of CIFAR-10 test (default: all 10,000)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_vision_knn"))
    args = parse_with_quick(parser, QUICK, "smoke run: 5 steps, 2,000 train images (the bank), 1,000 test images")
    args.methods = chosen(parser, ",".join(METHODS) if args.methods == "all" else args.methods, list(METHODS), "method(s)")
    return args


def use_threads(args, device: torch.device) -> None:
    """On CPU, ``--threads`` torch threads, else one per usable core: what nlpssl.train does."""
    if device.type == "cpu":
        torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))


def one_run(name: str, seed: int, args, bank, test, device: torch.device, randoms: list[str]) -> tuple[float, float, float]:
    """Train and score one (name, seed): an untrained baseline, lightly's SimCLR or an nlpssl method."""
    if name in randoms:
        return run_random(seed, args, bank, test, device, "mae" if name == RANDOM_VIT else "simclr")
    if name == LIGHTLY:
        return run_lightly(seed, args, bank, test, device)
    return run_nlpssl(name, seed, args, bank, test)


#: the benchmark files whose code computes this benchmark's figures (the run ledger's fingerprint reads them)
SCRIPTS = ("vision_knn.py", "lightly_side.py", "common.py")


def budget_arguments(args) -> dict:
    """The arguments a single run's figure depends on (not which methods or seeds this invocation runs)."""
    return {key: value for key, value in vars(args).items() if key not in ("methods", "seeds", "no_lightly", "out")}


def main() -> None:
    args = parse_args()
    if not CIFAR10.is_file():
        raise SystemExit(f"error: {CIFAR10} not found; this benchmark needs CIFAR-10 in ../shared/data (or NLPSSL_SHARED_DATA)")
    lightly_side.import_lightly()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    use_threads(args, device)
    bank, test = evaluation_images(recipe("simclr", args.seeds[0], args), args)
    runs: dict[str, list] = {}
    randoms = [RANDOM, *([RANDOM_VIT] if "mae" in args.methods else [])]
    names = [*randoms, *args.methods, *([] if args.no_lightly else [LIGHTLY])]
    ledger = RunLedger(args.out / "runs.jsonl", fingerprint(budget_arguments(args), SCRIPTS))
    for name in names:
        for seed in args.seeds:
            print(f"== {name}, seed {seed}", flush=True)
            run = ledger.run(name, seed, lambda: one_run(name, seed, args, bank, test, device, randoms))
            if f"{name}:{seed}" in ledger.reused:
                print(f"== {name}, seed {seed}: kNN {run[0]:.2f}% (from {ledger.path}: same code, arguments and CPU)", flush=True)
            else:
                print(f"== {name}, seed {seed}: kNN {run[0]:.2f}%  train {run[1]:.0f}s  kNN eval {run[2]:.0f}s", flush=True)
            runs.setdefault(name, []).append(run)
    results = {name: summary(name_runs) for name, name_runs in runs.items()}
    random_knn = results[RANDOM]["knn"]

    def baseline(name: str) -> float:  # the same backbone, untrained: MAE's ViT for MAE, else the ResNet-18
        return results[RANDOM_VIT]["knn"] if name == "mae" else random_knn

    beats_random = {name: result["knn"] > baseline(name) for name, result in results.items() if name not in randoms}
    simclr_beats_lightly = results["simclr"]["knn"] > results[LIGHTLY]["knn"] if {"simclr", LIGHTLY} <= results.keys() else None

    threads = torch.get_num_threads()
    print(f"\nCIFAR-10 kNN (k=200, T=0.1): {args.steps} steps x {args.batch_size} images, ResNet-18 width {args.width}, "
          f"{args.image_size} px, seeds {args.seeds}, bank {len(bank)}, test {len(test)}, {device.type}, {threads} threads")
    print(f"{'method':<16}{'kNN %':>14}{'vs random':>11}{'train s':>10}{'kNN s':>8}")
    for name, result in results.items():
        spread = f" ± {result['std']:.2f}" if "std" in result else ""
        delta = "" if name in randoms else f"{result['knn'] - baseline(name):+.2f}"
        print(f"{name:<16}{result['knn']:>7.2f}{spread:<7}{delta:>11}{result['train_s']:>10.0f}{result['knn_s']:>8.0f}")
    print_result({
        "benchmark": "vision_knn",
        "knn": {name: round(result["knn"], 2) for name, result in results.items() if name not in randoms},
        "knn_std": {name: round(result["std"], 2) for name, result in results.items() if "std" in result and name not in randoms},
        "random_init": round(random_knn, 2),
        "random_init_vit": round(results[RANDOM_VIT]["knn"], 2) if RANDOM_VIT in results else None,
        "random_init_std": round(results[RANDOM]["std"], 2) if "std" in results[RANDOM] else None,
        "beats_random": beats_random,
        "simclr_beats_lightly": simclr_beats_lightly,
        "train_s": {name: round(result["train_s"], 1) for name, result in results.items() if name not in randoms},
        "steps": args.steps, "batch_size": args.batch_size, "width": args.width, "image_size": args.image_size,
        "seeds": args.seeds, "train_images": len(bank), "bank_images": len(bank), "test_images": len(test),
        "knn_k": 200, "knn_temperature": 0.1, "workers": args.workers, "torch_threads": threads, "device": device.type,
        "quick": args.quick, "data": "cifar10", "reused_runs": ledger.reused,
    })


if __name__ == "__main__":
    main()
