"""Recipe variants of vision methods at vision_knn's budget, judged on a selection split, never on test.

    python benchmarks/vision_variants.py                                    # every variant below, seed 0
    python benchmarks/vision_variants.py --variants simclr:default,simclr:temperature0.5 --seeds 0 1
    python benchmarks/vision_variants.py --quick                            # smoke run: minutes

Each variant is ``configs/vision/<method>.yaml`` with a few overrides, trained
exactly as ``vision_knn.py`` trains it (same steps, batch, seeded CIFAR-10
train subset, warm-up, seed) by ``vision_knn.run_nlpssl``. The score is kNN
accuracy (k=200, T=0.1, weighted cosine vote) of ``--val-images`` CIFAR-10
*train* images left out of that training subset, against the subset as the
bank: the split a recipe may be chosen on, so that ``vision_knn.py``'s test
figures stay untouched by the choice. The method's backbone untrained (seeded
as each run) is scored on the same split. Needs CIFAR-10 in ../shared/data.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vision_knn  # noqa: E402
from common import print_result  # noqa: E402
from run_ledger import RunLedger, fingerprint  # noqa: E402

from nlpssl.recipes.vision import load_splits, subset_rows  # noqa: E402

#: method -> variant -> overrides of its recipe (``--section.key=value``)
VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "mae": {
        "default": (),
        "mask50": ("--model.mask_ratio=0.5",),
        "lr5e-4": ("--train.lr=5e-4",),
        "decoder4": ("--model.decoder_num_layers=4",),  # MAE's Table 1a: a deeper decoder leaves the encoder more abstract features
        "pixels": ("--model.norm_pix_loss=false",),  # raw-pixel target: the encoder must keep colour, which short-budget kNN leans on
        "lr3e-3": ("--train.lr=3e-3",),
        # not vision_knn's budget: 3x the steps, about SimCLR's wall-clock time at 400 (an MAE step encodes 25% of the patches)
        "steps1200": ("--train.max_steps=1200", "--train.warmup_steps=120", "--train.save_every=1200", "--train.eval_every=1200"),
    },
    "simclr": {
        "default": (),
        "temperature0.5": ("--method.temperature=0.5",),  # the paper's CIFAR-10 value, the default before fcf18dd
    },
}
VAL_SEED = 123  # which left-out train images form the selection split; fixed for every variant and seed
QUICK = {"steps": 5, "train_images": 2000, "val_images": 500}


def selection_split(args, seed: int) -> tuple:
    """(bank: the seeded training subset, val: ``--val-images`` train images outside it), both labelled."""
    cfg = vision_knn.recipe("simclr", seed, args)
    cfg.data.max_train_images = None
    full = load_splits(cfg)["train"]
    inside, outside = subset_rows(len(full), args.train_images, seed)
    picked = torch.randperm(len(outside), generator=torch.Generator().manual_seed(VAL_SEED))[: args.val_images]
    return full.select(inside), full.select(outside[picked].sort().values)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    everything = [f"{method}:{name}" for method, names in VARIANTS.items() for name in names]
    parser.add_argument("--variants", default=",".join(everything), help="comma-separated METHOD:VARIANT, of: " + ", ".join(everything))
    vision_knn.add_budget_arguments(parser)
    parser.add_argument("--train-images", type=int, default=10000, help="the seeded training subset (the kNN bank)")
    parser.add_argument("--val-images", type=int, default=2000, help="left-out train images scored by kNN")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_vision_variants"))
    args = vision_knn.parse_with_quick(parser, QUICK, "smoke run: 5 steps, 2,000 training images, 500 scored")
    args.variants = vision_knn.chosen(parser, args.variants, everything, "variant(s)")
    return args


def main() -> None:
    args = parse_args()
    if not vision_knn.CIFAR10.is_file():
        raise SystemExit(f"error: {vision_knn.CIFAR10} not found; this benchmark needs CIFAR-10 in ../shared/data")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vision_knn.use_threads(args, device)
    methods = list(dict.fromkeys(variant.split(":")[0] for variant in args.variants))
    scores: dict[str, dict[str, list[float]]] = {method: {"untrained": []} for method in methods}
    arguments = vision_knn.budget_arguments(args) | {"variants": None}
    ledger = RunLedger(args.out / "runs.jsonl", fingerprint(arguments, [*vision_knn.SCRIPTS, "vision_variants.py"]))
    for seed in args.seeds:
        bank, val = selection_split(args, seed)
        for method in methods:
            untrained = ledger.run(f"{method}:untrained", seed, lambda: vision_knn.run_random(seed, args, bank, val, device, method))
            scores[method]["untrained"].append(untrained[0])
        for variant in args.variants:
            method, name = variant.split(":")
            run_args = argparse.Namespace(**{**vars(args), "out": args.out / method / name})
            run = ledger.run(variant, seed, lambda: vision_knn.run_nlpssl(method, seed, run_args, bank, val, VARIANTS[method][name]))
            print(f"== {variant}, seed {seed}: kNN {run[0]:.2f}% on the selection split", flush=True)
            scores[method].setdefault(name, []).append(run[0])
    print(f"\nkNN % of {len(val)} left-out train images at {args.steps} steps x {args.batch_size}, seeds {args.seeds}")
    for method, named in scores.items():
        for name, values in named.items():
            spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
            print(f"{method + ' ' + name:<24}{statistics.mean(values):>7.2f}{spread}")
    print_result({
        "benchmark": "vision_variants",
        "knn": {method: {name: round(statistics.mean(v), 2) for name, v in named.items()} for method, named in scores.items()},
        "knn_std": {method: {name: round(statistics.stdev(v), 2) for name, v in named.items() if len(v) > 1}
                    for method, named in scores.items()},
        "overrides": {variant: list(VARIANTS[variant.split(":")[0]][variant.split(":")[1]]) for variant in args.variants},
        "steps": args.steps, "batch_size": args.batch_size, "width": args.width, "seeds": args.seeds,
        "train_images": args.train_images, "val_images": len(val), "quick": args.quick, "reused_runs": ledger.reused,
    })


if __name__ == "__main__":
    main()
