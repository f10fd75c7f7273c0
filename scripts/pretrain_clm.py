"""Causal-LM pretraining of a GPT-2: config -> data -> model -> objective -> train().

    accelerate launch scripts/pretrain_clm.py                     # default recipe, CPU, minutes
    accelerate launch scripts/pretrain_clm.py --train.max_steps=40 --sample.prompt="Jesus said"

Writes output_dir/final (AutoModelForCausalLM + tokenizer, ready for
pipeline("text-generation")), metrics.jsonl (with a text sample at each
evaluation), config.yaml and checkpoints/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import set_seed

from nlpssl.config import load_config, save_config
from nlpssl.data.collators import CausalLMCollator
from nlpssl.distributed import cpu_only
from nlpssl.errors import exit_on_user_error
from nlpssl.evaluation.generation import TextSample
from nlpssl.models.text import build_clm_model
from nlpssl.objectives.clm import CausalLM
from nlpssl.recipes.common import output_path
from nlpssl.recipes.pretrain import CLMRecipe, pack_splits, resolve_tokenizer, split_corpus
from nlpssl.train import train

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "clm.yaml"


@exit_on_user_error
def main(argv: list[str]) -> None:
    cfg = load_config(CLMRecipe, argv, DEFAULT_RECIPE)
    state = PartialState(cpu=cpu_only())
    with state.main_process_first():
        train_docs, valid_docs = split_corpus(cfg.data, cfg.train.seed)
        tokenizer = resolve_tokenizer(
            cfg.tokenizer, train_docs, cfg.model.checkpoint, cfg.data.block_size, output_path(cfg.train, "tokenizer")
        )
        train_blocks, valid_blocks, _ = pack_splits(train_docs, valid_docs, tokenizer, cfg.data, style="gpt")
    if state.is_main_process:
        save_config(cfg, output_path(cfg.train, "config.yaml"))
    set_seed(cfg.train.seed)
    model = build_clm_model(tokenizer, cfg.model, cfg.model.checkpoint, cfg.data.block_size)
    sample = TextSample(tokenizer, cfg.sample.prompt, cfg.sample.max_new_tokens, cfg.sample.top_k, cfg.train.seed)
    train(
        CausalLM(model), train_blocks, CausalLMCollator(tokenizer), cfg.train,
        eval_dataset=valid_blocks, evaluators=[sample], tokenizer=tokenizer,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
