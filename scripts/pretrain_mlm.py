"""Masked-LM pretraining of a BERT: config -> data -> model -> objective -> train().

    accelerate launch scripts/pretrain_mlm.py                     # default recipe, CPU, minutes
    accelerate launch scripts/pretrain_mlm.py --config configs/mlm_wikitext2.yaml --train.max_steps=2000

Writes output_dir/final (AutoModelForMaskedLM + tokenizer), metrics.jsonl,
config.yaml and checkpoints/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate import PartialState
from accelerate.utils import set_seed

from nlpssl.config import load_config, save_config
from nlpssl.data.collators import MLMCollator
from nlpssl.distributed import cpu_only
from nlpssl.errors import exit_on_user_error
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.recipes.common import output_path
from nlpssl.recipes.pretrain import MLMRecipe, pack_splits, resolve_tokenizer, split_corpus
from nlpssl.train import train

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "mlm.yaml"


@exit_on_user_error
def main(argv: list[str]) -> None:
    cfg = load_config(MLMRecipe, argv, DEFAULT_RECIPE)
    state = PartialState(cpu=cpu_only())
    with state.main_process_first():
        train_docs, valid_docs = split_corpus(cfg.data, cfg.train.seed)
        tokenizer = resolve_tokenizer(
            cfg.tokenizer, train_docs, cfg.model.checkpoint, cfg.data.block_size, output_path(cfg.train, "tokenizer")
        )
        collator = MLMCollator(
            tokenizer, cfg.mlm.mask_prob, cfg.mlm.mask_token_frac, cfg.mlm.random_token_frac, cfg.mlm.whole_word_mask
        )
        train_blocks, valid_blocks, _ = pack_splits(train_docs, valid_docs, tokenizer, cfg.data, style="bert")
    if state.is_main_process:
        save_config(cfg, output_path(cfg.train, "config.yaml"))
    set_seed(cfg.train.seed)
    model = build_mlm_model(tokenizer, cfg.model, cfg.model.checkpoint)
    objective = MaskedLM(model, sparse_prediction=cfg.mlm.sparse_prediction)
    train(objective, train_blocks, collator, cfg.train, eval_dataset=valid_blocks, tokenizer=tokenizer)


if __name__ == "__main__":
    main(sys.argv[1:])
