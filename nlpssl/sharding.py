"""What the loop does differently when FSDP or DeepSpeed shard the model across processes.

The loop itself stays one loop; this module answers its questions:

- :func:`parameters_sharded`: does any process lack some parameters between
  steps (FSDP, DeepSpeed ZeRO-3)? Then forward passes are collectives and the
  main process alone cannot run the model or write it.
- :func:`whole_model`: a context in which every process holds every parameter,
  so evaluation runs as usual (each process its own number of batches; the
  evaluators on the main process only). FSDP2 gathers the parameters for it.
- :func:`evaluation_in_lockstep`: under ZeRO-3 the forward passes stay
  collectives (DeepSpeed gathers each layer as it runs and releases it after,
  so a forward pass on one process alone would wait for the others), so every
  process runs the same evaluation batches and evaluators.
- :func:`accumulation_boundary` / :func:`configure_deepspeed`: DeepSpeed owns
  the optimizer step; it must know which micro-batch closes an optimizer step
  and the loop's batch size and clipping.

Exports never assume the main process holds the model: the loop gathers
``accelerator.get_state_dict(model)`` on every process and the main process
writes it (``Objective.export(directory, state_dict)``).
"""

from __future__ import annotations

import contextlib

from accelerate import Accelerator
from accelerate.utils import DistributedType


def parameters_sharded(accelerator: Accelerator) -> bool:
    """True under FSDP and DeepSpeed ZeRO-3: each process holds a shard of the parameters between steps."""
    if accelerator.distributed_type == DistributedType.FSDP:
        return True
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        return accelerator.state.deepspeed_plugin.zero_stage == 3
    return False


@contextlib.contextmanager
def whole_model(accelerator: Accelerator, model):
    """Inside, every process holds every parameter and forward passes are local; outside, shards again.

    Enter on every process (it all-gathers). FSDP2: each FSDP unit unsharded and
    kept so across forward passes. Elsewhere (DDP, one process, ZeRO-1/2; and
    ZeRO-3, which evaluates in lockstep instead) it does nothing.

    Example::

        with whole_model(accelerator, model):
            if accelerator.is_main_process:
                metrics = evaluator(accelerator.unwrap_model(model))
    """
    if accelerator.distributed_type != DistributedType.FSDP:
        yield
        return
    with _fsdp2_unsharded(model, reshard_after_training_forward=bool(accelerator.state.fsdp_plugin.reshard_after_forward)):
        yield


def evaluation_in_lockstep(accelerator: Accelerator) -> bool:
    """True under DeepSpeed ZeRO-3: every process must run the same evaluation forward passes (they are collectives)."""
    return accelerator.distributed_type == DistributedType.DEEPSPEED and parameters_sharded(accelerator)


@contextlib.contextmanager
def _fsdp2_unsharded(model, reshard_after_training_forward: bool):
    from torch.distributed.fsdp import FSDPModule

    units = [module for module in model.modules() if isinstance(module, FSDPModule)]  # the same order on every process
    model.set_reshard_after_forward(False)  # the use torch documents: keep parameters gathered for evaluation
    for unit in units:
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            if unit is not model:  # the root keeps FSDP's own choice (no reshard after forward)
                unit.set_reshard_after_forward(reshard_after_training_forward, recurse=False)


def accumulation_boundary(accelerator: Accelerator, model, last: bool):
    """Context for one micro-batch's forward and backward: gradients are synchronised only when ``last``.

    DDP and FSDP: ``accelerator.no_sync`` on the other micro-batches. DeepSpeed:
    its engine steps the optimizer inside ``backward`` at a boundary, which
    Accelerate takes from ``sync_gradients``; the loop sets it per micro-batch.
    """
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.gradient_state._set_sync_gradients(last)
        return contextlib.nullcontext()
    return contextlib.nullcontext() if last else accelerator.no_sync(model)


def optimizer_steps_in_backward(accelerator: Accelerator) -> bool:
    """True under DeepSpeed: its engine updates the weights inside the last micro-batch's ``backward``.

    So the loop cannot hold back an update after seeing its gradients (a
    non-finite step); DeepSpeed's own loss scaler skips fp16 overflows.
    """
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def configure_deepspeed(accelerator: Accelerator, batch_size: int, max_grad_norm: float) -> None:
    """Give DeepSpeed the loop's micro-batch size and clipping (call before ``prepare``; nothing elsewhere).

    The loop prepares no DataLoader, from which Accelerate would read the batch
    size; accumulation stays the loop's (DeepSpeed's own count is 1, so it does
    not divide the loss again).
    """
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = batch_size
    config["gradient_accumulation_steps"] = 1
    config["train_batch_size"] = batch_size * accelerator.num_processes
    config["gradient_clipping"] = max_grad_norm
