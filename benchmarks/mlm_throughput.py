"""MLM training throughput: nlpssl's step against the Hugging Face recipe, same model and data.

    python benchmarks/mlm_throughput.py [--rounds 4 --steps 5 --batch-size 32]

Reference: DataCollatorForLanguageModeling + BertForMaskedLM (full vocabulary
head) + torch AdamW. nlpssl: MLMCollator + MaskedLM (sparse head) + the loop's
AdamW with rank-based weight decay. Both fp32 with gradient clipping, BERT of
hidden 256, 4 layers, 4 heads, vocab 30,522, sequence 128, on the same packed
WikiText-2 blocks. A timed step is collation + forward + backward + clip +
optimizer step. The collators are also timed alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from transformers import BertForMaskedLM, DataCollatorForLanguageModeling

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import alternate, bert_tokenizer, collator_rates, corpus, cycle, hf_lm_step, nlpssl_lm_step, report_lm_throughput, row_batches  # noqa: E402

from nlpssl.data.collators import MLMCollator  # noqa: E402
from nlpssl.data.text import tokenize_and_pack  # noqa: E402
from nlpssl.models.text import TransformerDims, bert_config  # noqa: E402
from nlpssl.objectives.mlm import MaskedLM  # noqa: E402


def nlpssl_step_fn(tokenizer, dims, examples_cycle):
    torch.manual_seed(0)
    objective = MaskedLM(BertForMaskedLM(bert_config(dims, tokenizer)))
    return nlpssl_lm_step(objective, MLMCollator(tokenizer), examples_cycle)


def hf_step_fn(tokenizer, dims, examples_cycle):
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_config(dims, tokenizer))
    return hf_lm_step(model, DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15, return_tensors="pt"), examples_cycle)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="training steps per side per round")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()
    tokenizer, tokenizer_name = bert_tokenizer()
    blocks, _ = tokenize_and_pack(corpus(), tokenizer, block_size=128)
    examples = row_batches(blocks, args.batch_size, 40, columns=("input_ids", "special_tokens_mask"))
    dims = TransformerDims(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024)
    train = alternate(
        {"nlpssl": nlpssl_step_fn(tokenizer, dims, cycle(examples)), "hf": hf_step_fn(tokenizer, dims, cycle(examples))},
        args.rounds, args.steps,
    )
    generator = torch.Generator().manual_seed(0)
    ours = MLMCollator(tokenizer)
    collate = collator_rates(
        lambda rows: ours(rows, generator=generator), DataCollatorForLanguageModeling(tokenizer, mlm=True, return_tensors="pt"),
        examples, args.rounds,
    )
    print(f"tokenizer: {tokenizer_name}; batch {args.batch_size} x 128; torch threads {torch.get_num_threads()}")
    report_lm_throughput("mlm_throughput", train, collate)


if __name__ == "__main__":
    main()
