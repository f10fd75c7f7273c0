"""Unsupervised-SimCSE training throughput: nlpssl against sentence-transformers, same model and data.

    python benchmarks/simcse_throughput.py [--rounds 4 --steps 5 --batch-size 64 --max-length 32]
    python benchmarks/simcse_throughput.py --quick        # smoke run: one timed step per side

Both sides train the offline all-MiniLM-L6-v2 on the same sentences (STS-B
train sentences from ../shared/data, else the built-in corpus), batch 64,
truncation at 32 tokens, temperature 0.05 (sentence-transformers' scale 20),
gradient clipping at 1.0, and the same optimizer on every side (the loop's
``make_optimizer``: fused AdamW).
- nlpssl: SentenceViewsCollator (each sentence twice, one forward of 2B rows)
  + SimCSE objective.
- sentence-transformers: its own step for (sentence, sentence) pairs with
  MultipleNegativesRankingLoss: ``model.tokenize`` of each column, the loss's
  forward and backward. The Trainer's bookkeeping is left out, which can only
  flatter the reference.
The headline ``ratio`` compares the two on the very same seeded random batches.
``ratio_grouped`` is a second row: nlpssl with its recipe's
``train.group_by_length`` (batches of similar length, in random order; the
default of configs/simcse_unsup.yaml) against the same random batches, so it
sees other sentences and less padding; whether grouping changes what the model
learns is ``benchmarks/simcse_grouping.py``'s question. Timed alternately in
one run; reports sentences/s and both ratios.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, alternate, print_result  # noqa: E402

from nlpssl.data.corpus import load_corpus  # noqa: E402
from nlpssl.data.pairs import SentenceViewsCollator, split_sentences  # noqa: E402
from nlpssl.models.heads import SentencePooler  # noqa: E402
from nlpssl.objectives.simcse import SimCSE  # noqa: E402
from nlpssl.optim import make_optimizer  # noqa: E402
from nlpssl.recipes.common import resolve_checkpoint  # noqa: E402
from nlpssl.sampling import StepBatchSampler  # noqa: E402


def sentences(limit: int = 4000) -> list[str]:
    stsb = SHARED_DATA / "stsb" / "stsb-en-train.csv"
    if stsb.is_file():
        import csv

        with stsb.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        texts = list(dict.fromkeys(text for row in rows for text in row[:2]))
    else:
        texts = split_sentences(load_corpus("bible-web"))["text"]
    return texts[:limit]


def batches(texts: list[str], batch_size: int, group_by_length: bool = False):
    """Seeded random batches (the same for every side), optionally grouped by length as nlpssl's recipe does."""
    lengths = [len(t) for t in texts] if group_by_length else None
    for key in StepBatchSampler(len(texts), batch_size, 0, 1, seed=0, lengths=lengths):
        yield [texts[i] for i in key.indices]


def nlpssl_step_fn(path: str, texts, batch_size: int, max_length: int, group_by_length: bool):
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(path)
    encoder = AutoModel.from_pretrained(path, add_pooling_layer=False)
    objective = SimCSE(encoder, SentencePooler("mean"), num_views=2, temperature=0.05, gather=False).train()
    optimizer = make_optimizer(objective, lr=3e-5, weight_decay=0.0)
    collate = SentenceViewsCollator(tokenizer, ["text"], repeat=2, max_length=max_length)
    stream = batches(texts, batch_size, group_by_length)

    def step() -> float:
        batch = collate([{"text": t} for t in next(stream)])
        objective(batch)["loss"].backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(batch_size)

    return step


def sentence_transformers_step_fn(path: str, texts, batch_size: int, max_length: int):
    from sentence_transformers import SentenceTransformer, losses

    torch.manual_seed(0)
    model = SentenceTransformer(path, device="cpu")
    model.max_seq_length = max_length
    model.train()
    loss_fn = losses.MultipleNegativesRankingLoss(model, scale=20.0)
    optimizer = make_optimizer(model, lr=3e-5, weight_decay=0.0)
    stream = batches(texts, batch_size)

    def step() -> float:
        column = next(stream)
        features = [model.tokenize(column), model.tokenize(column)]  # anchor, positive: the same sentences
        loss_fn(features, labels=None).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(batch_size)

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side before the rounds")
    parser.add_argument("--quick", action="store_true", help="smoke run: one warm-up and one timed step per side, batch 16")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.steps, args.warmup, args.batch_size = 1, 1, 1, 16
    path, texts = resolve_checkpoint("minilm"), sentences()
    shape = (path, texts, args.batch_size, args.max_length)
    rates = alternate(
        {
            "nlpssl": nlpssl_step_fn(*shape, group_by_length=False),
            "nlpssl_grouped": nlpssl_step_fn(*shape, group_by_length=True),
            "sentence_transformers": sentence_transformers_step_fn(*shape),
        },
        args.rounds, args.steps, args.warmup,
    )
    reference = rates["sentence_transformers"]
    print(f"MiniLM, batch {args.batch_size}, max length {args.max_length}, torch threads {torch.get_num_threads()}")
    for name, rate in rates.items():
        print(f"{name:<22} {rate:8.1f} sentences/s   {rate / reference:.2f}x")
    print_result({
        "benchmark": "simcse_throughput",
        "nlpssl_sentences_per_s": round(rates["nlpssl"], 2),
        "nlpssl_grouped_sentences_per_s": round(rates["nlpssl_grouped"], 2),
        "sentence_transformers_sentences_per_s": round(reference, 2),
        "ratio": round(rates["nlpssl"] / reference, 3),
        "ratio_grouped": round(rates["nlpssl_grouped"] / reference, 3),
        "batch_size": args.batch_size, "max_length": args.max_length, "rounds": args.rounds, "steps_per_round": args.steps,
        "torch_threads": torch.get_num_threads(), "quick": args.quick,
    })


if __name__ == "__main__":
    main()
