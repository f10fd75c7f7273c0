"""Masked-LM pretraining of a BERT: config -> data -> model -> objective -> train().

    accelerate launch scripts/pretrain_mlm.py                     # default recipe, CPU, minutes
    accelerate launch scripts/pretrain_mlm.py --config configs/mlm_wikitext2.yaml

Writes output_dir/final (AutoModelForMaskedLM + tokenizer), metrics.jsonl,
config.yaml and checkpoints/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate.utils import set_seed

from nlpssl.config import flat_dict, load_config
from nlpssl.data.collators import MLMCollator
from nlpssl.errors import exit_on_user_error
from nlpssl.models.text import build_mlm_model, check_architecture_name
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.recipes.pretrain import MLMRecipe, prepare_lm_data
from nlpssl.train import train

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "mlm.yaml"


@exit_on_user_error
def main(argv: list[str]) -> None:
    cfg = load_config(MLMRecipe, argv, DEFAULT_RECIPE)
    if cfg.model.architecture is not None:
        check_architecture_name(cfg.model.architecture)  # before the slow data work
    mlm = cfg.mlm
    data = prepare_lm_data(
        cfg, "bert",
        lambda tokenizer: MLMCollator(tokenizer, mlm.mask_prob, mlm.mask_token_frac, mlm.random_token_frac, mlm.whole_word_mask),
    )
    set_seed(cfg.train.seed)
    model = build_mlm_model(data.tokenizer, cfg.model, cfg.model.checkpoint, cfg.model.architecture)
    objective = MaskedLM(model, sparse_prediction=mlm.sparse_prediction)
    objective.set_context_free_baseline(data.context_free_ids)
    train(
        objective, data.train_blocks, data.collator, cfg.train, eval_dataset=data.valid_blocks, tokenizer=data.tokenizer,
        hparams=flat_dict(cfg),
    )


if __name__ == "__main__":
    main(sys.argv[1:])
