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

from accelerate.utils import set_seed

from nlpssl.config import flat_dict, load_config
from nlpssl.data.collators import CausalLMCollator
from nlpssl.errors import exit_on_user_error
from nlpssl.evaluation.generation import TextSample
from nlpssl.models.text import build_clm_model
from nlpssl.objectives.clm import CausalLM
from nlpssl.recipes.pretrain import CLMRecipe, prepare_lm_data
from nlpssl.train import train

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "clm.yaml"


@exit_on_user_error
def main(argv: list[str]) -> None:
    cfg = load_config(CLMRecipe, argv, DEFAULT_RECIPE)
    data = prepare_lm_data(cfg, "gpt", CausalLMCollator)
    set_seed(cfg.train.seed)
    model = build_clm_model(data.tokenizer, cfg.model, cfg.model.checkpoint, cfg.data.block_size)
    objective = CausalLM(model)
    objective.set_context_free_baseline(data.context_free_ids)
    sample = TextSample(data.tokenizer, cfg.sample.prompt, cfg.sample.max_new_tokens, cfg.sample.top_k, cfg.train.seed)
    train(
        objective, data.train_blocks, data.collator, cfg.train,
        eval_dataset=data.valid_blocks, evaluators=[sample], tokenizer=data.tokenizer,
        hparams=flat_dict(cfg),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
