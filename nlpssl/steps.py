"""One optimizer step's arithmetic: accumulate gradients over micro-batches and processes, sum evaluation losses, log windows.

The loss of an optimizer step is the mean over every target of all its
micro-batches on all processes (:func:`accumulate_gradients`), so gradient
accumulation and the number of processes do not change what is optimised.
Counts stay on the training device; :class:`Window` reads them once per log step.
Before each update :func:`check_step` reads three flags, agreed by every process:
is the loss finite, is the gradient norm finite, was a process asked to stop.
"""

from __future__ import annotations

import time
from typing import NamedTuple, Sequence

import torch
from accelerate import Accelerator

from nlpssl.objectives.base import Objective
from nlpssl.sharding import accumulation_boundary


class StepTotals(NamedTuple):
    """One optimizer step's sums, kept on the device until a log step reads them."""

    loss_sum: torch.Tensor  # () this process's sum of per-target losses
    targets: torch.Tensor  # () targets of the step on all processes
    throughput: torch.Tensor  # () this process's tokens (or images)


def accumulate_gradients(accelerator: Accelerator, model, micro_batches: Sequence[dict], count_key: str = "num_tokens") -> StepTotals:
    """Forward and backward of one optimizer step: the gradient of the mean loss over every target of the step.

    The micro-batches' target counts (:meth:`Objective.count_targets`) are
    all-reduced once; each micro-batch's mean loss is turned back into a sum and
    divided by that global count, times W because DDP averages gradients over
    the W processes. So accumulation of A x B rows on W processes gives the
    gradient of one batch of A x W x B rows, however the targets (masked or
    padded tokens) fall; the Hugging Face Trainer's ``num_items_in_batch``.
    Leaves the gradients in the parameters; reads nothing back to the host.

    Example::

        totals = accumulate_gradients(accelerator, model, [next(batches) for _ in range(4)])
        optimizer.step()   # totals.loss_sum / totals.targets: this process's share of the step's mean loss
    """
    device = accelerator.device
    objective = accelerator.unwrap_model(model)
    counts = [_on(objective.count_targets(batch), device) for batch in micro_batches]  # A x ()
    targets = accelerator.reduce(torch.stack(counts).sum(), reduction="sum").clamp(min=1)  # () the whole step's
    loss_sum, throughput = 0.0, 0.0
    for micro, (batch, count) in enumerate(zip(micro_batches, counts)):
        with accumulation_boundary(accelerator, model, last=micro == len(micro_batches) - 1):
            out = model(batch)
            summed = out["loss"] * count  # () the sum of this micro-batch's per-target losses
            accelerator.backward(summed * accelerator.num_processes / targets)
        loss_sum = loss_sum + summed.detach()
        throughput = throughput + _on(out.get(count_key, batch_size_of(batch)), device, torch.float32)
    return StepTotals(loss_sum, targets, throughput)


class StepCheck(NamedTuple):
    """What every process agrees on after an optimizer step's backward pass, before the update."""

    loss_finite: bool  # the step's loss is finite on every process
    grad_finite: bool  # the gradient norm (global: reduced over the processes) is finite
    stop_requested: bool  # some process received a stop signal (:mod:`nlpssl.preemption`)

    @property
    def finite(self) -> bool:
        return self.loss_finite and self.grad_finite

    @property
    def non_finite(self) -> str:
        """What was not finite: "loss", "gradient norm" or both ("" when all was finite)."""
        return " and ".join(name for name, finite in (("loss", self.loss_finite), ("gradient norm", self.grad_finite)) if not finite)


def check_step(accelerator: Accelerator, loss_sum: torch.Tensor, grad_norm, stop_requested: bool) -> StepCheck:
    """Whether the step's loss and gradient norm are finite and whether any process was asked to stop: one answer for all.

    ``loss_sum``: this process's (:attr:`StepTotals.loss_sum`); ``grad_norm``:
    what ``clip_grad_norm_`` returned (the same on every process, as DDP and FSDP
    reduce the gradients first; None where unknown). One all-reduce of three
    numbers and one host read per optimizer step, the loop's only one: on a GPU
    the read waits for the backward pass, so the host cannot queue the next
    step's kernels early. That is the price of never applying a NaN update and
    of every process stopping at the same step.

    Example::

        check = check_step(accelerator, totals.loss_sum, accelerator.clip_grad_norm_(params, 1.0), signals.received is not None)
        if check.finite: optimizer.step()
    """
    device = accelerator.device
    grad_norm = _on(0.0 if grad_norm is None else grad_norm, device, torch.float32)
    flags = torch.stack([
        ~torch.isfinite(_on(loss_sum, device, torch.float32)), ~torch.isfinite(grad_norm), _on(stop_requested, device),
    ]).float()  # (3,) 1 where not finite / asked to stop
    loss_bad, grad_bad, stop = accelerator.reduce(flags, reduction="sum").tolist()  # the one host read of the step
    return StepCheck(loss_bad == 0, grad_bad == 0, stop > 0)


@torch.no_grad()
def evaluation_totals(objective: Objective, batches, device: torch.device, counted: int | None = None) -> torch.Tensor:
    """(2 + C,) on ``device``: the sum of per-target losses over ``batches``, their number of targets,
    and the sums of the objective's C evaluation counts (``objective.eval_count_names``, e.g. top-1 hits).

    Only the first ``counted`` batches count (all by default); the others only
    keep the processes' forward passes in step (DeepSpeed ZeRO-3).
    """
    names = objective.eval_count_names
    total = torch.zeros(2 + len(names), device=device)
    for index, batch in enumerate(batches):
        batch = _to_device(batch, device)
        counts = float(counted is None or index < counted)
        weight = _on(objective.count_targets(batch), device, torch.float32) * counts
        out = objective(batch)
        hits = [_on(out["eval_counts"][name], device, torch.float32) * counts for name in names]
        total += torch.stack([out["loss"].float() * weight, weight, *hits])
    return total


class Window:
    """The steps between two log events, as device tensors until :meth:`flush` reads them once."""

    def __init__(self) -> None:
        self.steps: list[StepTotals] = []
        self.seconds = 0.0
        self.skipped = 0

    def add(self, totals: StepTotals, seconds: float) -> None:
        self.steps.append(totals)
        self.seconds += seconds

    def flush(self, accelerator: Accelerator, unit: str = "tokens") -> dict:
        """The mean over the window's steps of each step's global mean loss, and the throughput."""
        started = time.perf_counter()
        local = torch.stack([torch.stack([s.loss_sum.float(), s.throughput]) for s in self.steps])  # (S, 2)
        summed = accelerator.reduce(local, reduction="sum")  # (S, 2)
        step_losses = summed[:, 0] / torch.stack([s.targets for s in self.steps])  # (S,)
        loss, throughput = torch.stack([step_losses.mean(), summed[:, 1].sum()]).tolist()  # the one host read
        seconds = self.seconds + time.perf_counter() - started  # the read waited for the queued steps
        record = {"loss": loss, f"{unit}_per_s": throughput / max(seconds, 1e-9)}
        if self.skipped:
            record["skipped_steps"] = self.skipped
        self.__init__()
        return record


def batch_size_of(batch: dict) -> int:
    """Rows in a batch dict (the first tensor's leading dimension)."""
    return next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _on(value, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A count (tensor on any device, or a number) as a tensor on ``device``."""
    return torch.as_tensor(value, device=device, dtype=dtype)
