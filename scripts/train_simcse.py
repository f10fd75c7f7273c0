"""SimCSE sentence embeddings, unsupervised (dropout views) or supervised (positives, hard negatives).

    accelerate launch scripts/train_simcse.py                              # unsupervised, from MiniLM
    accelerate launch scripts/train_simcse.py --config configs/simcse_sup.yaml --data.train=nli.csv
    accelerate launch scripts/train_simcse.py --model.checkpoint=outputs/mlm/final --model.pooler=cls_before_pooler

Writes output_dir/final (and output_dir/best, selected on STS-B dev when
../shared/data is present): folders that AutoModel and SentenceTransformer load.
"""

from __future__ import annotations

import sys
from pathlib import Path

from accelerate.utils import set_seed

from nlpssl.config import flat_dict, load_config, save_config
from nlpssl.data.pairs import SentenceViewsCollator
from nlpssl.errors import exit_on_user_error
from nlpssl.evaluation.selection import KeepBest
from nlpssl.objectives.simcse import SimCSE
from nlpssl.recipes.common import output_path, pad_multiple, start_run
from nlpssl.recipes.simcse import SimCSERecipe, load_simcse_data, load_simcse_encoder, row_lengths, selection_key, dev_metrics
from nlpssl.train import train

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "simcse_unsup.yaml"


@exit_on_user_error
def main(argv: list[str]) -> None:
    cfg = load_config(SimCSERecipe, argv, DEFAULT_RECIPE)
    state = start_run(cfg)
    with state.main_process_first():
        sentences, columns = load_simcse_data(cfg.data, cfg.train)
    if state.is_main_process:
        save_config(cfg, output_path(cfg.train, "config.yaml"))
    set_seed(cfg.train.seed)
    encoder, tokenizer, pooler = load_simcse_encoder(cfg.model)
    collator = SentenceViewsCollator(
        tokenizer, columns, repeat=2 if len(columns) == 1 else 1, max_length=cfg.data.max_length, pad_to_multiple_of=pad_multiple(cfg.train),
    )
    objective = SimCSE(encoder, pooler, collator.num_views, cfg.simcse.temperature, cfg.simcse.gather, cfg.data.max_length)
    evaluators = []
    dev = dev_metrics(cfg.simcse, tokenizer)
    if dev is not None:
        evaluators.append(KeepBest(dev, selection_key(cfg.simcse), output_path(cfg.train, "best"), tokenizer))
    lengths = row_lengths(sentences, columns) if cfg.train.group_by_length else None
    train(objective, sentences, collator, cfg.train, evaluators=evaluators, tokenizer=tokenizer, lengths=lengths, hparams=flat_dict(cfg))


if __name__ == "__main__":
    main(sys.argv[1:])
