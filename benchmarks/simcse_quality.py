"""Does SimCSE work? From scratch on CPU: MLM-pretrain a small BERT on WikiText-2, then
unsupervised SimCSE on WikiText-2 sentences; STS before and after, MiniLM as a ceiling.

    python benchmarks/simcse_quality.py [--mlm-steps 1200 --simcse-steps 500 --out outputs/bench_simcse]

Needs ../shared/data (WikiText-2 and the STS sets). Everything is nlpssl's
library on the same data: a WordPiece tokenizer trained on WikiText-2 train, a
BERT (hidden 256, 4 layers, 4 heads) pretrained with masked LM, then SimCSE
(mean pooling, temperature 0.05, batch 64, 32 tokens). STS figures are
Spearman x100 of cosine vs gold, mean-pooled, as evaluate_sts reports them;
avg is over STS12-16, STS-B test and SICK-R. Nothing is tuned on test sets.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, WIKITEXT, pretrain_wikitext_mlm, print_result  # noqa: E402

from nlpssl.data.corpus import load_corpus  # noqa: E402
from nlpssl.data.pairs import SentenceViewsCollator, split_sentences  # noqa: E402
from nlpssl.data.tokenizer import load_tokenizer  # noqa: E402
from nlpssl.evaluation.sts import evaluate_sts  # noqa: E402
from nlpssl.models.heads import SentencePooler  # noqa: E402
from nlpssl.objectives.simcse import SimCSE  # noqa: E402
from nlpssl.recipes.common import resolve_checkpoint  # noqa: E402
from nlpssl.train import TrainConfig, train  # noqa: E402

def train_simcse(start: Path, out: Path, steps: int) -> Path:
    sentences = split_sentences(load_corpus(str(WIKITEXT / "wiki.train.tokens")))
    tokenizer = load_tokenizer(start)
    torch.manual_seed(0)
    encoder = AutoModel.from_pretrained(start, add_pooling_layer=False)
    objective = SimCSE(encoder, SentencePooler("mean"), num_views=2, temperature=0.05, max_seq_length=32)
    cfg = TrainConfig(output_dir=str(out / "simcse"), max_steps=steps, batch_size=64, lr=1e-4, warmup_steps=0,
                      weight_decay=0.0, log_every=50, save_every=steps, eval_every=steps + 1)
    train(objective, sentences, SentenceViewsCollator(tokenizer, ["text"], repeat=2, max_length=32), cfg, tokenizer=tokenizer)
    return out / "simcse" / "final"


def sts(folder: str | Path) -> dict:
    model, tokenizer = AutoModel.from_pretrained(folder), load_tokenizer(folder)
    return evaluate_sts(model, tokenizer, SHARED_DATA, pooling="mean")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlm-steps", type=int, default=1200)
    parser.add_argument("--simcse-steps", type=int, default=500)
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_simcse"))
    args = parser.parse_args()
    if not WIKITEXT.is_dir():
        sys.exit(f"error: {WIKITEXT} not found; this benchmark needs ../shared/data (or NLPSSL_SHARED_DATA)")
    started = time.perf_counter()
    mlm = pretrain_wikitext_mlm(args.out / "mlm", args.mlm_steps)
    simcse = train_simcse(mlm, args.out, args.simcse_steps)
    scores = {"mlm": sts(mlm), "simcse": sts(simcse), "minilm": sts(resolve_checkpoint("minilm"))}
    print(f"{'task':<10}" + "".join(f"{name:>10}" for name in scores))
    for task in scores["mlm"]:
        print(f"{task:<10}" + "".join(f"{scores[name][task]:>10.2f}" for name in scores))
    gain = scores["simcse"]["stsb_test"] - scores["mlm"]["stsb_test"]
    print(f"SimCSE raises STS-B test by {gain:.2f} points (target >= 10); {time.perf_counter() - started:.0f} s in all")
    print_result({
        "benchmark": "simcse_quality",
        "mlm_steps": args.mlm_steps,
        "simcse_steps": args.simcse_steps,
        **{f"{name}_{key}": round(scores[name][key], 2) for name in scores for key in ("stsb_test", "avg")},
        "stsb_test_gain": round(gain, 2),
    })


if __name__ == "__main__":
    main()
