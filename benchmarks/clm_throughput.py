"""Causal-LM training throughput: nlpssl's step against the Hugging Face recipe, same model and data.

    python benchmarks/clm_throughput.py [--rounds 5 --steps 5 --batch-size 16]

Reference: DataCollatorForLanguageModeling(mlm=False) + GPT2LMHeadModel(labels=...)
(full vocabulary head, shift and loss inside the model, its default use_cache).
nlpssl: CausalLMCollator + CausalLM (the head only at target positions, no KV
cache while training). The same optimizer on both sides (the loop's
``make_optimizer``: AdamW with rank-based weight decay, fused where torch has
it). Both fp32 with dropout 0.1 and gradient
clipping, GPT-2 of hidden 256, 4 layers, 4 heads, a byte-level BPE of 8,000
tokens trained on bible-web, sequence 128, on the same packed blocks. A timed
step is collation + forward + backward + clip + optimizer step; the sides
alternate in rounds after a warm-up. The collators are also timed alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, collator_rates, cycle, hf_lm_step, nlpssl_lm_step, report_lm_throughput, row_batches  # noqa: E402

from transformers import DataCollatorForLanguageModeling, GPT2LMHeadModel  # noqa: E402  (after common, which imports nlpssl first)

from nlpssl.data.collators import CausalLMCollator  # noqa: E402
from nlpssl.data.corpus import load_corpus  # noqa: E402
from nlpssl.data.text import tokenize_and_pack  # noqa: E402
from nlpssl.data.tokenizer import train_tokenizer  # noqa: E402
from nlpssl.models.text import TransformerDims, gpt2_config  # noqa: E402
from nlpssl.objectives.clm import CausalLM  # noqa: E402

BLOCK_SIZE = 128


def nlpssl_step_fn(config, tokenizer, examples_cycle):
    torch.manual_seed(0)
    objective = CausalLM(GPT2LMHeadModel(config)).train()
    return nlpssl_lm_step(objective, CausalLMCollator(tokenizer), examples_cycle)


def hf_step_fn(config, tokenizer, examples_cycle):
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).train()
    return hf_lm_step(model, DataCollatorForLanguageModeling(tokenizer, mlm=False, return_tensors="pt"), examples_cycle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5, help="training steps per side per round")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side before the rounds")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    corpus = load_corpus("bible-web")
    tokenizer = train_tokenizer(corpus["text"], kind="bpe", vocab_size=8000, model_max_length=BLOCK_SIZE)
    count = 20  # distinct batches, cycled
    blocks, _ = tokenize_and_pack(corpus.select(range(200)), tokenizer, BLOCK_SIZE, style="gpt")
    examples = row_batches(blocks, args.batch_size, count)
    config = gpt2_config(TransformerDims(256, 4, 4, 1024, 0.1, BLOCK_SIZE), tokenizer)
    train = alternate(
        {"nlpssl": nlpssl_step_fn(config, tokenizer, cycle(examples)), "hf": hf_step_fn(config, tokenizer, cycle(examples))},
        args.rounds, args.steps, args.warmup,
    )
    collate = collator_rates(
        CausalLMCollator(tokenizer), DataCollatorForLanguageModeling(tokenizer, mlm=False, return_tensors="pt"), examples, args.rounds
    )
    print(f"tokenizer: byte-level BPE {len(tokenizer):,}; batch {args.batch_size} x {BLOCK_SIZE}; torch threads {torch.get_num_threads()}")
    report_lm_throughput("clm_throughput", train, collate, batch_size=args.batch_size, rounds=args.rounds, steps_per_round=args.steps)


if __name__ == "__main__":
    main()
