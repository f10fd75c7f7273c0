"""The run's ``Accelerator`` and the model options that trade memory or compile time for speed.

- :func:`make_accelerator`: checks the launch (DeepSpeed / FSDP requested
  without what they need, bf16 without hardware support, a node that cannot
  reach the main process: one line each), then Accelerate's ``Accelerator``.
- :func:`trackers`: ``train.report_to`` as Accelerate's ``log_with`` (a tracker
  that is asked for but not installed: one line naming the package to install).
- :func:`apply_model_options`: ``train.compile`` (``torch.compile`` of the
  objective, in place: parameter names and exports are unchanged) and
  ``train.gradient_checkpointing`` (recompute each layer's activations in the
  backward pass of every Hugging Face model inside the objective).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs
from torch import nn

from nlpssl.distributed import cpu_only
from nlpssl.errors import UserError, first_line
from nlpssl.launch import check_launch, rendezvous_errors, rendezvous_timeout
from nlpssl.sharding import configure_deepspeed

#: torch.compile backend of ``train.compile``; tests use "aot_eager" (no C++ compiler run)
COMPILE_BACKEND = "inductor"


#: ``train.report_to`` names -> the package each needs
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow", "trackio": "trackio"}


def trackers(report_to: str) -> list[str]:
    """Accelerate's ``log_with`` for ``train.report_to``: "none", one tracker, or "all" (every installed one).

    Example::

        trackers("tensorboard")   # ["tensorboard"]; a UserError when tensorboard is not installed
    """
    if report_to == "none":
        return []
    if report_to == "all":
        return [name for name, package in TRACKER_PACKAGES.items() if importlib.util.find_spec(package) is not None]
    if report_to not in TRACKER_PACKAGES:
        raise UserError(f"train.report_to={report_to}: unknown tracker; use one of none, {', '.join(TRACKER_PACKAGES)}, all")
    package = TRACKER_PACKAGES[report_to]
    if importlib.util.find_spec(package) is None:
        raise UserError(f"train.report_to={report_to}: the {package} package is not installed; pip install {package}")
    return [report_to]


def make_accelerator(
    precision: str, batch_size: int, max_grad_norm: float, log_with: list[str] | None = None, project_dir: Path | None = None,
) -> Accelerator:
    """The run's Accelerator: CPU + gloo without accelerators, else Accelerate's choice (DDP, FSDP, DeepSpeed).

    ``log_with``: Accelerate trackers (see :func:`trackers`), writing under ``project_dir``.

    Example::

        accelerator = make_accelerator("bf16", batch_size=32, max_grad_norm=1.0)
    """
    check_launch(precision)
    timeout = rendezvous_timeout()
    handlers = [InitProcessGroupKwargs(timeout=timeout)] if timeout else []  # used when no recipe joined the processes first
    try:
        with rendezvous_errors():
            accelerator = Accelerator(
                mixed_precision=precision, cpu=cpu_only(), kwargs_handlers=handlers,
                log_with=log_with or None, project_dir=str(project_dir) if project_dir is not None else None,
            )
    except ValueError as error:
        raise UserError(f"train.precision={precision}: {first_line(error)}") from None
    configure_deepspeed(accelerator, batch_size, max_grad_norm)
    return accelerator


def set_cpu_threads(accelerator: Accelerator, requested: int | None) -> None:
    """Use the machine's cores on CPU: `accelerate launch` without --cpu pins OMP_NUM_THREADS=1."""
    if accelerator.device.type != "cpu":
        return
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(requested or max(1, cores // local_processes))


def apply_model_options(objective: nn.Module, compile: bool = False, gradient_checkpointing: bool = False) -> None:
    """Turn on ``gradient_checkpointing`` in the objective's Hugging Face models, then ``compile`` it in place.

    Example::

        apply_model_options(objective, compile=True)   # objective(batch) now runs the compiled graph
    """
    if gradient_checkpointing:
        models = _outermost({name: m for name, m in objective.named_modules() if getattr(m, "supports_gradient_checkpointing", False)})
        if not models:
            raise UserError(
                f"train.gradient_checkpointing=true, but {type(objective).__name__} holds no Hugging Face model "
                f"that supports it; set it to false"
            )
        for model in models:  # non-reentrant: works with DDP, FSDP and frozen inputs
            _enable_checkpointing(model)
    if compile:
        objective.compile(backend=COMPILE_BACKEND)


def _outermost(modules: dict[str, nn.Module]) -> list[nn.Module]:
    """The modules (by dotted name) not inside another of them: BertForMaskedLM, not also its BertModel."""
    return [m for name, m in modules.items() if not any(name.startswith(other + ".") for other in modules if other != name)]


def _enable_checkpointing(model: nn.Module) -> None:
    """transformers 5 names it activation checkpointing; 4.x gradient checkpointing."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
