"""Causal-LM training throughput: nlpssl's step against the Hugging Face recipe, same model and data.

    python benchmarks/clm_throughput.py [--rounds 5 --steps 5 --batch-size 16]

Reference: DataCollatorForLanguageModeling(mlm=False) + GPT2LMHeadModel(labels=...)
(full vocabulary head, shift and loss inside the model, its default use_cache)
+ torch AdamW. nlpssl: CausalLMCollator + CausalLM (the head only at target
positions, no KV cache while training) + the loop's AdamW with rank-based weight
decay (fused where torch has it). Both fp32 with dropout 0.1 and gradient
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
from transformers import DataCollatorForLanguageModeling, GPT2LMHeadModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, cycle, hf_lm_step, nlpssl_lm_step, print_result  # noqa: E402

from nlpssl.data.collators import CausalLMCollator  # noqa: E402
from nlpssl.data.corpus import load_corpus  # noqa: E402
from nlpssl.data.text import tokenize_and_pack  # noqa: E402
from nlpssl.data.tokenizer import train_tokenizer  # noqa: E402
from nlpssl.models.text import EncoderDims, gpt2_config  # noqa: E402
from nlpssl.objectives.clm import CausalLM  # noqa: E402

BLOCK_SIZE = 128


def batches(blocks, batch_size: int, count: int) -> list[list[dict]]:
    """``count`` batches of packed blocks (input ids only: both collators see the same rows)."""
    ids = blocks.select(range(count * batch_size))["input_ids"]
    return [[{"input_ids": row} for row in ids[i : i + batch_size]] for i in range(0, len(ids), batch_size)]


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
    examples = batches(blocks, args.batch_size, count)
    config = gpt2_config(EncoderDims(256, 4, 4, 1024, 0.1, BLOCK_SIZE), tokenizer)
    train = alternate(
        {"nlpssl": nlpssl_step_fn(config, tokenizer, cycle(examples)), "hf": hf_step_fn(config, tokenizer, cycle(examples))},
        args.rounds, args.steps, args.warmup,
    )
    ours, theirs = CausalLMCollator(tokenizer), DataCollatorForLanguageModeling(tokenizer, mlm=False, return_tensors="pt")
    data_a, data_b = cycle(examples), cycle(examples)
    collate = alternate(
        {
            "nlpssl": lambda: float(ours(next(data_a))["attention_mask"].sum()),
            "hf": lambda: float(theirs(next(data_b))["attention_mask"].sum()),
        },
        args.rounds, 20,
    )
    print(f"tokenizer: byte-level BPE {len(tokenizer):,}; batch {args.batch_size} x {BLOCK_SIZE}; torch threads {torch.get_num_threads()}")
    print(f"train step  nlpssl {train['nlpssl']:>10,.0f} tok/s   hf {train['hf']:>10,.0f} tok/s   ratio {train['nlpssl'] / train['hf']:.2f}x")
    print(f"collator    nlpssl {collate['nlpssl']:>10,.0f} tok/s   hf {collate['hf']:>10,.0f} tok/s   ratio {collate['nlpssl'] / collate['hf']:.2f}x")
    print_result({
        "benchmark": "clm_throughput",
        "nlpssl_tokens_per_s": round(train["nlpssl"]),
        "hf_tokens_per_s": round(train["hf"]),
        "ratio": round(train["nlpssl"] / train["hf"], 3),
        "collator_nlpssl_tokens_per_s": round(collate["nlpssl"]),
        "collator_hf_tokens_per_s": round(collate["hf"]),
        "collator_ratio": round(collate["nlpssl"] / collate["hf"], 3),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
    })


if __name__ == "__main__":
    main()
