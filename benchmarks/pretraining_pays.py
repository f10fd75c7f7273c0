"""Does pretraining pay? A small encoder MLM-pretrained with nlpssl on WikiText-2 against the same
architecture randomly initialised, both fine-tuned on SST-2 with the same budget, three seeds.

    python benchmarks/pretraining_pays.py [--mlm-steps 4000 --train-examples 1000 2000 8000 --epochs 3 --seeds 0 1 2]
    python benchmarks/pretraining_pays.py --mlm-dir outputs/bench_wikitext_mlm/steps4000/final   # reuse a pretrained model
    python benchmarks/pretraining_pays.py --quick                                     # smoke run: minutes

The pretrained side is ``common.wikitext_mlm`` (``configs/mlm_wikitext2.yaml``:
a ModernBERT of hidden 256 and 4 layers, WordPiece 16,000 trained on WikiText-2
train, masked LM for ``--mlm-steps`` steps of 16 x 128 tokens (default: the recipe's
4,000); reused from ``outputs/bench_wikitext_mlm`` when the
same code already trained it), or a model passed with ``--mlm-dir``. The
baseline is ``build_classifier(..., random_init=True)``: the same config and
tokenizer, random weights. Both are fine-tuned by ``nlpssl.train.train`` with
identical hyperparameters and steps (one budget per ``--train-examples`` size:
pretraining matters most when labels are few), and both classify the mean of the
token states (``--pooling mean``, the default here: masked LM never trains the
[CLS] state that ModernBERT's own default, ``cls``, reads).

Protocol (``sst2_protocol.load_sst2``): each seed draws its training subset and a
held-out validation split (about 875 sentences) from SST-2 train; the model is
evaluated on validation once per epoch and the best weights are kept
(``sst2_protocol.SelectOnValidation``); that model is scored once on SST-2 dev (872
sentences, the test figure; nothing is selected on it). Reported: dev accuracy
mean and sample std over the seeds for each side, and the margin
(pretrained - random, paired by seed) with its std. Needs ../shared/data.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import final_training_loss, mean_std, print_result, wikitext_mlm, wikitext_recipe_steps  # noqa: E402
from sst2_protocol import SST2_LABELS, SelectOnValidation, dev_accuracy, load_sst2  # noqa: E402

from nlpssl.data.classification import token_lengths  # noqa: E402
from nlpssl.data.collators import ClassificationCollator  # noqa: E402
from nlpssl.data.tokenizer import load_tokenizer  # noqa: E402
from nlpssl.models.text import build_classifier  # noqa: E402
from nlpssl.objectives.classification import SequenceClassification  # noqa: E402
from nlpssl.train import TrainConfig, train  # noqa: E402

SIDES = ("pretrained", "random_init")
DEFAULT_POOLING = "mean"  # masked LM never trains the [CLS] state


def finetune(checkpoint: Path, tokenizer, splits, random_init: bool, args, seed: int) -> float:
    """Fine-tune a classifier on ``checkpoint`` (or its random twin), selected on validation; SST-2 dev accuracy x100."""
    steps_per_epoch = math.ceil(len(splits.train) / args.batch_size)
    steps = steps_per_epoch * args.epochs
    selection = SelectOnValidation(splits.validation, tokenizer, every=steps_per_epoch, max_steps=steps)
    torch.manual_seed(seed)
    model = build_classifier(str(checkpoint), tokenizer, SST2_LABELS, random_init=random_init)
    if hasattr(model.config, "classifier_pooling"):  # ModernBERT's classifier reads it at every forward
        model.config.classifier_pooling = args.pooling or DEFAULT_POOLING
    elif args.pooling:
        sys.exit(f"error: --pooling applies to ModernBERT checkpoints; {checkpoint} is a {model.config.model_type}")
    objective = SequenceClassification(model)
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            output_dir=out, max_steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=steps // 10,
            min_lr_ratio=0.0, weight_decay=0.01, seed=seed, group_by_length=True,
            log_every=50, save_every=steps, eval_every=steps_per_epoch,
        )
        rows = splits.train.select_columns(["input_ids", "labels"])
        objective = train(
            objective, rows, ClassificationCollator(tokenizer), cfg, evaluators=[selection.evaluator()], lengths=token_lengths(splits.train),
        )
    selection.restore(objective.model)
    return 100 * dev_accuracy(objective.model, splits, tokenizer)


def compare(checkpoint: Path, tokenizer, size: int, args) -> dict:
    """Both sides on every seed at one training-set size; dev accuracy and margin summaries."""
    accuracies: dict[str, list[float]] = {side: [] for side in SIDES}
    for seed in args.seeds:
        splits = load_sst2(tokenizer, size, seed)
        for side in SIDES:
            accuracies[side].append(finetune(checkpoint, tokenizer, splits, side == "random_init", args, seed))
        print(f"{len(splits.train):>6,} sentences, seed {seed}: pretrained {accuracies['pretrained'][-1]:.2f}  "
              f"random init {accuracies['random_init'][-1]:.2f}", flush=True)
    margins = [p - r for p, r in zip(accuracies["pretrained"], accuracies["random_init"])]
    return {
        "train_examples": size, "finetune_steps": math.ceil(size / args.batch_size) * args.epochs,
        **{side: mean_std(values) for side, values in accuracies.items()},
        "margin": mean_std(margins),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlm-steps", type=int, default=wikitext_recipe_steps(),
                        help="MLM steps of configs/mlm_wikitext2.yaml's recipe (default: its max_steps)")
    parser.add_argument("--mlm-dir", type=Path, help="an MLM-pretrained model folder to reuse instead of pretraining")
    parser.add_argument("--train-examples", type=int, nargs="+", default=[1000, 2000, 8000],
                        help="SST-2 training subset sizes; each is one budget for both sides")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pooling", choices=("cls", "mean"),
                        help="ModernBERT's classifier_pooling for both sides (default: mean; cls is the checkpoint's own)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 MLM steps, 200 sentences, one epoch, seed 0")
    args = parser.parse_args()
    if args.quick:
        args.mlm_steps, args.train_examples, args.epochs, args.seeds = 30, [200], 1, [0]
    return args


def main() -> None:
    args = parse_args()
    started = time.perf_counter()
    checkpoint, reused = (args.mlm_dir, False) if args.mlm_dir else wikitext_mlm(args.mlm_steps)
    tokenizer = load_tokenizer(checkpoint)
    results = [compare(checkpoint, tokenizer, size, args) for size in args.train_examples]
    print(f"SST-2 dev accuracy, mean +- std over seeds {args.seeds}; batch {args.batch_size}, lr {args.lr}, "
          f"{args.epochs} epochs; start: {checkpoint}; {time.perf_counter() - started:.0f} s in all")
    for result in results:
        print(f"{result['train_examples']:>6,} sentences: " + "  ".join(
            f"{name} {result[name]['mean']:.2f} +- {result[name]['std']:.2f}" for name in (*SIDES, "margin")))
    print_result({
        "benchmark": "pretraining_pays",
        "mlm_steps": None if args.mlm_dir else args.mlm_steps,
        "mlm_dir": str(checkpoint), "mlm_reused": reused, "mlm_final_loss": final_training_loss(checkpoint),
        "seeds": args.seeds, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "pooling": args.pooling or DEFAULT_POOLING,
        "sst2_dev_accuracy": results,
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
