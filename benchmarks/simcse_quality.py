"""Does SimCSE work? From scratch on CPU: MLM-pretrain a small encoder on WikiText-2, then
unsupervised SimCSE on WikiText-2 sentences; STS before and after, MiniLM as a ceiling.

    python benchmarks/simcse_quality.py [--mlm-steps 4000 --simcse-steps 500 --out outputs/bench_simcse]
    python benchmarks/simcse_quality.py --mlm-dir outputs/bench_wikitext_mlm/steps4000/final    # reuse the MLM model
    python benchmarks/simcse_quality.py --quick                                      # smoke run: STS-B only, a few steps

The MLM model is ``common.wikitext_mlm``: reused from outputs/bench_wikitext_mlm
when the same code already trained it for ``--mlm-steps`` (as
``pretraining_pays.py`` does first in ``run_all.py``), else trained here.

Needs ../shared/data (WikiText-2, SNLI dev/test and the STS sets). Everything is nlpssl's
library on the same data: a WordPiece tokenizer trained on WikiText-2 train, a
ModernBERT (hidden 256, 4 layers; configs/mlm_wikitext2.yaml) pretrained with masked LM, then SimCSE
(mean pooling, temperature 0.05, batch 64, 32 tokens, lr 1e-4 unless --simcse-lr), evaluated on
STS-B dev every 50 steps with the best kept, as the SimCSE paper selects; the
final model is reported too. STS figures are Spearman x100 of cosine vs gold,
mean-pooled, as evaluate_sts reports them; avg is over STS12-16, STS-B test and
SICK-R. Nothing is tuned on test sets.

Two controls: ``random_init`` is the same architecture untrained, mean-pooled
(how much of the starting point is word overlap alone); ``sup_simcse`` is
supervised SimCSE from the same MLM model on SNLI dev+test triples (premise,
entailed, contradicted hypothesis as hard negative; --sup-steps 0 skips it),
selected on STS-B dev the same way.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    SHARED_DATA,
    WIKITEXT,
    final_training_loss,
    print_result,
    snli_triples,
    wikitext_mlm,
    wikitext_recipe_steps,
)

from transformers import AutoConfig, AutoModel  # noqa: E402  (after common, which imports nlpssl first)

from nlpssl.data.corpus import load_corpus  # noqa: E402
from nlpssl.data.pairs import SentenceViewsCollator, split_sentences  # noqa: E402
from nlpssl.data.tokenizer import load_tokenizer  # noqa: E402
from nlpssl.evaluation.selection import KeepBest  # noqa: E402
from nlpssl.evaluation.sts import STS_TASKS, evaluate_sts  # noqa: E402
from nlpssl.objectives.simcse import SimCSE  # noqa: E402
from nlpssl.recipes.common import resolve_checkpoint  # noqa: E402
from nlpssl.recipes.simcse import SentenceModelConfig, load_simcse_encoder, stsb_dev_metric  # noqa: E402
from nlpssl.train import TrainConfig, train  # noqa: E402


def train_simcse(start: Path, out: Path, rows, columns: list[str], steps: int, eval_every: int, lr: float) -> tuple[Path, Path]:
    """SimCSE from ``start`` on ``rows``; returns the final model and the one best on STS-B dev.

    One column: unsupervised (each sentence twice, dropout views). Three columns:
    supervised (anchor, positive, hard negative).
    """
    shutil.rmtree(out, ignore_errors=True)  # this benchmark's own folder: a rerun starts it over
    torch.manual_seed(0)
    # as scripts/train_simcse.py loads it: any encoder, with dropout when it was saved without any
    encoder, tokenizer, pooler = load_simcse_encoder(SentenceModelConfig(checkpoint=str(start), pooler="mean"))
    repeat = 2 if len(columns) == 1 else 1
    objective = SimCSE(encoder, pooler, num_views=len(columns) * repeat, temperature=0.05, max_seq_length=32)
    cfg = TrainConfig(output_dir=str(out), max_steps=steps, batch_size=64, lr=lr, warmup_steps=0,
                      weight_decay=0.0, log_every=50, save_every=steps, eval_every=eval_every)
    keep_best = KeepBest(stsb_dev_metric(str(SHARED_DATA), tokenizer), "stsb_dev", out / "best", tokenizer)
    collator = SentenceViewsCollator(tokenizer, columns, repeat=repeat, max_length=32)
    train(objective, rows, collator, cfg, evaluators=[keep_best], tokenizer=tokenizer)
    return out / "final", out / "best"


ALL_TASKS, QUICK_TASKS = STS_TASKS, ("stsb_dev", "stsb_test")


def sts(folder: str | Path, tasks=ALL_TASKS) -> dict:
    """STS scores of the model in ``folder``, mean-pooled."""
    model, tokenizer = AutoModel.from_pretrained(folder), load_tokenizer(folder)
    return evaluate_sts(model, tokenizer, SHARED_DATA, pooling="mean", tasks=tasks)


def sts_random_init(like: Path, tasks=ALL_TASKS) -> dict:
    """STS of ``like``'s architecture and tokenizer with seeded random weights, mean-pooled."""
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.from_pretrained(like))
    return evaluate_sts(model, load_tokenizer(like), SHARED_DATA, pooling="mean", tasks=tasks)


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlm-steps", type=int, default=wikitext_recipe_steps(),
                        help="MLM steps of configs/mlm_wikitext2.yaml's recipe (default: its max_steps)")
    parser.add_argument("--mlm-dir", type=Path, help="an MLM-pretrained model folder to start from instead of pretraining")
    parser.add_argument("--simcse-steps", type=int, default=500)
    parser.add_argument("--simcse-lr", type=float, default=1e-4)
    parser.add_argument("--sup-steps", type=int, default=300, help="supervised SimCSE control on SNLI (0 skips it)")
    parser.add_argument("--sup-lr", type=float, default=1e-4)
    parser.add_argument("--eval-every", type=int, default=50, help="STS-B dev evaluations for model selection")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench_simcse"))
    parser.add_argument("--quick", action="store_true", help="smoke run: 30 MLM steps, 10 + 5 SimCSE steps, STS-B only")
    args = parser.parse_args()
    if args.quick:
        args.mlm_steps, args.simcse_steps, args.sup_steps, args.eval_every = 30, 10, 5, 5
    tasks = QUICK_TASKS if args.quick else ALL_TASKS
    if not WIKITEXT.is_dir():
        sys.exit(f"error: {WIKITEXT} not found; this benchmark needs ../shared/data (or NLPSSL_SHARED_DATA)")
    started = time.perf_counter()
    mlm, reused = (args.mlm_dir, False) if args.mlm_dir else wikitext_mlm(args.mlm_steps)
    sentences = split_sentences(load_corpus(str(WIKITEXT / "wiki.train.tokens")))
    final, best = train_simcse(mlm, args.out / "simcse", sentences, ["text"], args.simcse_steps, args.eval_every, args.simcse_lr)
    scores = {"mlm": sts(mlm, tasks), "random_init": sts_random_init(mlm, tasks), "simcse": sts(best, tasks),
              "simcse_final": sts(final, tasks)}
    if args.sup_steps:
        triples = snli_triples()
        print(f"supervised control: {len(triples)} SNLI triples")
        _, sup_best = train_simcse(mlm, args.out / "sup_simcse", triples, ["anchor", "positive", "negative"],
                                   args.sup_steps, args.eval_every, args.sup_lr)
        scores["sup_simcse"] = sts(sup_best, tasks)
    scores["minilm"] = sts(resolve_checkpoint("minilm"), tasks)
    print(f"{'task':<10}" + "".join(f"{name:>14}" for name in scores))
    for task in scores["mlm"]:
        print(f"{task:<10}" + "".join(f"{scores[name][task] or float('nan'):>14.2f}" for name in scores))
    gain = scores["simcse"]["stsb_test"] - scores["mlm"]["stsb_test"]
    print(f"unsupervised SimCSE raises STS-B test by {gain:.2f} points (target >= 10); {time.perf_counter() - started:.0f} s in all")
    if "sup_simcse" in scores:
        print(f"supervised SimCSE (SNLI control) raises it by {scores['sup_simcse']['stsb_test'] - scores['mlm']['stsb_test']:.2f}")
    print_result({
        "benchmark": "simcse_quality",
        "mlm_steps": None if args.mlm_dir else args.mlm_steps,
        "mlm_dir": str(mlm), "mlm_reused": reused, "mlm_final_loss": final_training_loss(mlm),
        "simcse_steps": args.simcse_steps,
        "simcse_lr": args.simcse_lr,
        "sup_steps": args.sup_steps,
        **{f"{name}_{key}": rounded(scores[name][key]) for name in scores for key in ("stsb_dev", "stsb_test", "avg")},
        "stsb_test_gain": round(gain, 2),
        **({"sup_stsb_test_gain": round(scores["sup_simcse"]["stsb_test"] - scores["mlm"]["stsb_test"], 2)} if "sup_simcse" in scores else {}),
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
