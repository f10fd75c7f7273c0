"""Fine-tune a pretrained encoder for sequence classification or regression.

    accelerate launch scripts/finetune_classification.py                       # built-in bible-genre task, MiniLM
    accelerate launch scripts/finetune_classification.py --config configs/sst2.yaml
    accelerate launch scripts/finetune_classification.py --model.checkpoint=outputs/mlm/final \
        --data.train=train.csv --data.validation=dev.csv --data.text_column=review --data.label_column=stars

Writes output_dir/final and output_dir/best (AutoModelForSequenceClassification +
tokenizer, with the label names), metrics.json (validation and test scores of
the best model), predictions_*.csv, confusion_matrix.png, metrics.jsonl, config.yaml.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate.utils import set_seed

from nlpssl.config import flat_dict, load_config, save_config
from nlpssl.data.classification import token_lengths
from nlpssl.data.collators import ClassificationCollator
from nlpssl.data.tokenizer import load_tokenizer
from nlpssl.errors import exit_on_user_error
from nlpssl.models.text import build_classifier, load_pretrained
from nlpssl.objectives.classification import SequenceClassification
from nlpssl.recipes.classification import ClassificationRecipe, load_classification_data, model_selector, report, training_rows
from nlpssl.recipes.common import output_path, pad_multiple, resolve_checkpoint, start_run
from nlpssl.train import train

DEFAULT_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "classification.yaml"


@exit_on_user_error
def main(argv: list[str]) -> None:
    cfg = load_config(ClassificationRecipe, argv, DEFAULT_RECIPE)
    state = start_run(cfg)
    checkpoint = resolve_checkpoint(cfg.model.checkpoint)
    tokenizer = load_tokenizer(checkpoint)
    with state.main_process_first():
        splits = load_classification_data(cfg.data, tokenizer, cfg.train.seed)
    if state.is_main_process:
        save_config(cfg, output_path(cfg.train, "config.yaml"))
    set_seed(cfg.train.seed)
    model = build_classifier(checkpoint, tokenizer, splits.label_names, cfg.model.random_init)
    collator = ClassificationCollator(tokenizer, pad_to_multiple_of=pad_multiple(cfg.train))
    selector = model_selector(splits, collator, cfg.eval, output_path(cfg.train, "best"), tokenizer)
    objective = train(
        SequenceClassification(model), training_rows(splits), collator, cfg.train,
        evaluators=[selector] if selector else [], tokenizer=tokenizer, lengths=token_lengths(splits.train),
        hparams=flat_dict(cfg),
    )
    if state.is_main_process:
        if selector is not None:  # report the kept model, not the last one
            objective = SequenceClassification(load_pretrained(type(model), str(selector.directory))).to(objective.model.device)
        metrics = report(objective, splits, collator, Path(cfg.train.output_dir), cfg.eval.batch_size)
        print(json.dumps(metrics))


if __name__ == "__main__":
    main(sys.argv[1:])
