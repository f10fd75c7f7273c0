"""Self-supervised pretraining of an image backbone on the training loop the text recipes use.

    accelerate launch scripts/pretrain_vision.py                      # SimCLR, ResNet-18, built-in digits
    accelerate launch scripts/pretrain_vision.py --method=byol        # simclr moco byol simsiam mae rotation jigsaw colorization
    accelerate launch scripts/pretrain_vision.py --config configs/vision/moco.yaml \
        --data.source=../shared/data/cifar10_jpg/cifar10-images.tar.gz --train.max_steps=2000

Writes output_dir/final (the backbone: nlpssl.models.vision.load_backbone, or a
transformers ViT-MAE folder), checkpoints/, metrics.jsonl (loss, kNN accuracy),
metrics.json (kNN and linear probe at the end), curves.png, and for MAE
reconstructions.png.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from accelerate.utils import set_seed

from nlpssl.config import flat_dict, load_config, save_config
from nlpssl.errors import exit_on_user_error
from nlpssl.evaluation.vision import KNNMonitor
from nlpssl.objectives.vision_base import ImageCollator
from nlpssl.recipes.common import output_path, start_run
from nlpssl.recipes.vision import (
    VisionRecipe, build_objective, check_recipe, evaluation_sets, final_evaluation, load_splits, method_shortcut,
    synchronise_batchnorm,
)
from nlpssl.train import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "vision"


@exit_on_user_error
def main(argv: list[str]) -> None:
    cfg = load_config(VisionRecipe, method_shortcut(argv, CONFIGS), CONFIGS / "simclr.yaml")
    state = start_run(cfg)
    check_recipe(cfg, state.num_processes)
    set_seed(cfg.train.seed)
    objective = build_objective(cfg)
    with state.main_process_first():
        splits = load_splits(cfg)
    objective = synchronise_batchnorm(objective, cfg.model.sync_batchnorm, state.num_processes, state.device)
    sets = evaluation_sets(cfg, splits)
    evaluators = [KNNMonitor(*sets, cfg.eval.knn_k, cfg.eval.knn_temperature, cfg.eval.batch_size)] if sets else []
    if state.is_main_process:
        save_config(cfg, output_path(cfg.train, "config.yaml"))
    trained = train(objective, splits["train"], ImageCollator(), cfg.train, evaluators=evaluators, hparams=flat_dict(cfg))
    if state.is_main_process:
        results = final_evaluation(cfg, trained, splits, sets, Path(cfg.train.output_dir))
        print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:])
