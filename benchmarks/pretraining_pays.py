"""Does pretraining pay? A small BERT MLM-pretrained with nlpssl on WikiText-2 against the same
architecture randomly initialised, both fine-tuned on SST-2 with the same budget.

    python benchmarks/pretraining_pays.py [--mlm-steps 3000 --train-examples 1000 2000 8000 --epochs 3]
    python benchmarks/pretraining_pays.py --mlm-dir outputs/bench_simcse/mlm/final   # reuse a pretrained model

The pretrained side is ``benchmarks/common.pretrain_wikitext_mlm`` (hidden 256,
4 layers, 4 heads, WordPiece 16,000 trained on WikiText-2 train, masked LM for
``--mlm-steps`` steps of 32 x 128 tokens), or a model passed with ``--mlm-dir``.
The baseline is ``build_classifier(..., random_init=True)``: the same config and
tokenizer, random weights. Both are fine-tuned by ``nlpssl.train.train`` with
identical hyperparameters and steps on the same seeded SST-2 training subset (one
budget per ``--train-examples`` size: pretraining matters most when labels are few)
and scored on SST-2 dev (872 sentences) after the last step; nothing is selected on dev.
Needs ../shared/data.
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
from common import (  # noqa: E402
    SST2_LABELS,
    dev_accuracy,
    load_sst2,
    pretrain_wikitext_mlm,
    print_result,
)

from nlpssl.data.classification import token_lengths  # noqa: E402
from nlpssl.data.collators import ClassificationCollator  # noqa: E402
from nlpssl.data.tokenizer import load_tokenizer  # noqa: E402
from nlpssl.models.text import build_classifier  # noqa: E402
from nlpssl.objectives.classification import SequenceClassification  # noqa: E402
from nlpssl.train import TrainConfig, train  # noqa: E402


def finetune(checkpoint: Path, tokenizer, splits, random_init: bool, args, steps: int) -> float:
    """Fine-tune a classifier on ``checkpoint`` (or its random twin); SST-2 dev accuracy."""
    torch.manual_seed(args.seed)
    objective = SequenceClassification(build_classifier(str(checkpoint), tokenizer, SST2_LABELS, random_init=random_init))
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            output_dir=out, max_steps=steps, batch_size=args.batch_size, lr=args.lr, warmup_steps=steps // 10,
            min_lr_ratio=0.0, weight_decay=0.01, seed=args.seed, group_by_length=True,
            log_every=50, save_every=steps, eval_every=steps,
        )
        rows = splits.train.select_columns(["input_ids", "labels"])
        objective = train(objective, rows, ClassificationCollator(tokenizer), cfg, lengths=token_lengths(splits.train))
    return dev_accuracy(objective.model, splits, tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlm-steps", type=int, default=3000)
    parser.add_argument("--mlm-dir", type=Path, help="an MLM-pretrained model folder to reuse instead of pretraining")
    parser.add_argument("--train-examples", type=int, nargs="+", default=[1000, 2000, 8000],
                        help="SST-2 training subset sizes; each is one budget for both sides")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_pretraining_pays"))
    args = parser.parse_args()
    started = time.perf_counter()
    checkpoint = args.mlm_dir or pretrain_wikitext_mlm(args.out / "mlm", args.mlm_steps)
    tokenizer = load_tokenizer(checkpoint)
    results = []
    for size in args.train_examples:
        splits = load_sst2(tokenizer, size, args.seed)
        steps = math.ceil(len(splits.train) / args.batch_size) * args.epochs
        pretrained = finetune(checkpoint, tokenizer, splits, random_init=False, args=args, steps=steps)
        scratch = finetune(checkpoint, tokenizer, splits, random_init=True, args=args, steps=steps)
        results.append({"train_examples": len(splits.train), "finetune_steps": steps,
                        "pretrained": round(100 * pretrained, 2), "random_init": round(100 * scratch, 2),
                        "margin": round(100 * (pretrained - scratch), 2)})
        print(f"{len(splits.train):>6,} sentences, {steps:>4} steps: pretrained {100 * pretrained:.2f}  "
              f"random init {100 * scratch:.2f}  margin {100 * (pretrained - scratch):+.2f}", flush=True)
    print(f"SST-2 dev accuracy; batch {args.batch_size}, lr {args.lr}, {args.epochs} epochs; start: {checkpoint}; "
          f"{time.perf_counter() - started:.0f} s in all")
    print_result({
        "benchmark": "pretraining_pays",
        "mlm_steps": None if args.mlm_dir else args.mlm_steps,
        "mlm_dir": str(args.mlm_dir) if args.mlm_dir else None,
        "sst2_dev_accuracy": results,
        "margin_points": {str(r["train_examples"]): r["margin"] for r in results},
    })


if __name__ == "__main__":
    main()
