"""MLM training throughput: nlpssl's step against the Hugging Face recipe on the same batches, for three models.

    python benchmarks/mlm_throughput.py                          # all rows (BERT-base takes most of the time)
    python benchmarks/mlm_throughput.py --rows recipe,bert_base  # some rows
    python benchmarks/mlm_throughput.py --quick                  # smoke run: one timed step per side, batch 8

Rows, each nlpssl against the reference on the very same batches:

* ``small_30k``: BERT of hidden 256, 4 layers, 4 heads, FFN 1024 with a
  30,522-token vocabulary (MiniLM's WordPiece) on WikiText-2, 32 x 128: the
  vocabulary projection is most of the work, where sparse prediction gains most.
* ``recipe`` (the headline: what ``scripts/pretrain_mlm.py`` runs by default):
  the model configs/mlm.yaml builds (its architecture and dimensions, a
  tokenizer of its kind and vocabulary trained on its corpus, its masking,
  batch and block size), through the recipe's own functions, so the row
  follows the config file.
* ``bert_base``: BERT-base dimensions (768, 12 layers, 12 heads, FFN 3072),
  vocabulary 30,522, WikiText-2, 32 x 128, fewer timed steps (a step takes
  tens of seconds on 2 CPU cores).

Reference: DataCollatorForLanguageModeling + the same ``*ForMaskedLM`` class
(full vocabulary head, loss from ``labels``). nlpssl: MLMCollator + MaskedLM
(sparse head). The same optimizer on both sides (``nlpssl.optim.make_optimizer``:
fused AdamW, decay by tensor rank), both fp32 with clipping at 1.0 and the same
initial weights. A timed step is collation + forward + backward + clip +
optimizer step; the sides alternate in rounds after a warm-up and the median of
the rounds is reported. The collators are also timed alone.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, alternate, bert_tokenizer, collator_rates, corpus, cycle, hf_lm_step, lm_throughput_fields, nlpssl_lm_step, print_result, row_batches  # noqa: E402,I001

from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling  # noqa: E402

from nlpssl.config import load_config  # noqa: E402
from nlpssl.data.collators import MLMCollator  # noqa: E402
from nlpssl.data.text import tokenize_and_pack  # noqa: E402
from nlpssl.models.text import TransformerDims, bert_config, build_mlm_model  # noqa: E402
from nlpssl.objectives.mlm import MaskedLM  # noqa: E402
from nlpssl.recipes.pretrain import MaskingConfig, MLMRecipe, resolve_tokenizer, split_corpus  # noqa: E402

MLM_RECIPE = REPO / "configs" / "mlm.yaml"
HEADLINE = "recipe"
DISTINCT_BATCHES = 40  # cycled through by both sides


@dataclass(frozen=True)
class Timing:
    """How long a row is timed: rounds of ``steps`` steps per side, after ``warmup`` untimed steps per side."""

    rounds: int
    steps: int
    warmup: int


SMALL_TIMING, BERT_BASE_TIMING, QUICK_TIMING = Timing(4, 5, 3), Timing(2, 2, 1), Timing(1, 1, 1)


@dataclass
class Row:
    """One comparison: a model config, its tokenizer and data, masking, batch shape and timing."""

    tokenizer: object
    model_config: object  # a transformers PretrainedConfig of a *ForMaskedLM model
    masking: MaskingConfig
    docs: object  # datasets.Dataset with ``text``
    corpus_name: str
    tokenizer_name: str
    batch_size: int = 32
    block_size: int = 128
    timing: Timing = SMALL_TIMING


def small_30k_row() -> Row:
    """BERT 256/4/4/1024 with a 30,522-word vocabulary on WikiText-2."""
    tokenizer, name = bert_tokenizer()
    return Row(tokenizer, bert_config(TransformerDims(256, 4, 4, 1024), tokenizer), MaskingConfig(), corpus(), "WikiText-2", name)


def bert_base_row() -> Row:
    """BERT-base dimensions with a 30,522-word vocabulary on WikiText-2, timed for fewer steps."""
    tokenizer, name = bert_tokenizer()
    config = bert_config(TransformerDims(768, 12, 12, 3072), tokenizer)
    return Row(tokenizer, config, MaskingConfig(), corpus(), "WikiText-2", name, timing=BERT_BASE_TIMING)


def recipe_row() -> Row:
    """The default recipe's model, tokenizer, corpus, masking and batch shape, built by the recipe's functions."""
    cfg = load_config(MLMRecipe, [], MLM_RECIPE)
    docs, _ = split_corpus(cfg.data, cfg.train.seed)
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer = resolve_tokenizer(cfg.tokenizer, docs, cfg.model.checkpoint, cfg.data.block_size, Path(scratch))
    architecture = getattr(cfg.model, "architecture", None)  # model.architecture, where the recipe has one
    extra = {"architecture": architecture} if architecture else {}
    model = build_mlm_model(tokenizer, cfg.model, cfg.model.checkpoint, **extra)
    name = f"{cfg.tokenizer.kind} {len(tokenizer):,} trained on {cfg.data.corpus}"
    return Row(tokenizer, model.config, cfg.mlm, docs, cfg.data.corpus, name, cfg.train.batch_size, cfg.data.block_size)


ROWS = {"small_30k": small_30k_row, HEADLINE: recipe_row, "bert_base": bert_base_row}


def packed_batches(row: Row, count: int) -> list[list[dict]]:
    """``count`` batches of packed blocks from the start of the row's corpus (doubling the prefix until enough)."""
    columns = ["input_ids", "special_tokens_mask", *(["word_starts"] if row.masking.whole_word_mask else [])]
    needed, prefix = count * row.batch_size, 1000
    while True:
        docs = row.docs.select(range(min(prefix, len(row.docs))))
        blocks, _ = tokenize_and_pack(docs, row.tokenizer, row.block_size)
        if len(blocks) >= needed or len(docs) == len(row.docs):
            break
        prefix *= 2
    if len(blocks) < needed:
        raise SystemExit(f"error: {row.corpus_name} gives {len(blocks)} blocks, fewer than the {needed} needed")
    return row_batches(blocks, row.batch_size, count, columns=columns)


def collators(row: Row):
    """nlpssl's MLMCollator (seeded) and DataCollatorForLanguageModeling, both with the row's masking."""
    m = row.masking
    ours = MLMCollator(row.tokenizer, m.mask_prob, m.mask_token_frac, m.random_token_frac, m.whole_word_mask)
    theirs = DataCollatorForLanguageModeling(
        row.tokenizer, mlm=True, whole_word_mask=m.whole_word_mask, mlm_probability=m.mask_prob,
        mask_replace_prob=m.mask_token_frac, random_replace_prob=m.random_token_frac, return_tensors="pt",
    )
    return ours, theirs


def fresh_model(row: Row):
    """A ``*ForMaskedLM`` of the row's config with seeded weights: both sides start from the same ones."""
    torch.manual_seed(0)
    return AutoModelForMaskedLM.from_config(row.model_config).train()


def measure(name: str, row: Row, timing: Timing) -> dict:
    """Step and collator rates of both sides on the row's batches; its JSON fields."""
    examples = packed_batches(row, min(DISTINCT_BATCHES, timing.warmup + timing.rounds * timing.steps))
    ours, theirs = collators(row)
    train = alternate(
        {
            "nlpssl": nlpssl_lm_step(MaskedLM(fresh_model(row), sparse_prediction=row.masking.sparse_prediction), ours, cycle(examples)),
            "hf": hf_lm_step(fresh_model(row), theirs, cycle(examples)),
        },
        timing.rounds, timing.steps, timing.warmup,
    )
    generator = torch.Generator().manual_seed(0)
    collate = collator_rates(lambda rows: ours(rows, generator=generator), theirs, examples, timing.rounds)
    print(f"[{name}] tokenizer: {row.tokenizer_name}; batch {row.batch_size} x {row.block_size}")
    return lm_throughput_fields(train, collate) | model_fields(row) | {
        "corpus": row.corpus_name, "batch_size": row.batch_size, "block_size": row.block_size,
        "rounds": timing.rounds, "steps_per_round": timing.steps, "warmup_steps": timing.warmup,
    }


def model_fields(row: Row) -> dict:
    """The architecture and dimensions of the row's model, for the table."""
    config = row.model_config
    return {
        "architecture": config.model_type, "hidden_size": config.hidden_size, "num_layers": config.num_hidden_layers,
        "num_heads": config.num_attention_heads, "intermediate_size": config.intermediate_size, "vocab_size": config.vocab_size,
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of: {','.join(ROWS)}")
    parser.add_argument("--quick", action="store_true", help="smoke run: batch 8, one warm-up and one timed step per side")
    args = parser.parse_args()
    args.rows = [name.strip() for name in args.rows.split(",") if name.strip()]
    unknown = [name for name in args.rows if name not in ROWS]
    if unknown or not args.rows:
        parser.error(f"unknown or no row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
    return args


def main() -> None:
    args = parse_args()
    results = {}
    for name in args.rows:
        row = ROWS[name]()
        if args.quick:
            row.batch_size = 8
        results[name] = measure(name, row, QUICK_TIMING if args.quick else row.timing)
    print(f"torch threads {torch.get_num_threads()}")
    for name, fields in results.items():
        print(f"{name:<10} nlpssl {fields['nlpssl_tokens_per_s']:>8,} tok/s   hf {fields['hf_tokens_per_s']:>8,} tok/s   {fields['ratio']:.2f}x")
    print_result({
        "benchmark": "mlm_throughput",
        "headline": HEADLINE,
        **({"ratio": results[HEADLINE]["ratio"]} if HEADLINE in results else {}),
        "rows": results,
        "optimizer": "nlpssl.optim.make_optimizer on both sides (fused AdamW)",
        "torch_threads": torch.get_num_threads(),
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
