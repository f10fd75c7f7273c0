"""The one training loop, on Hugging Face Accelerate: CPU, one GPU, many GPUs, many nodes.

It knows only the :class:`~nlpssl.objectives.base.Objective` contract. It counts
optimizer steps, not epochs; the learning rate is a pure function of the step
(warmup then cosine) so there is no scheduler state to resume; weight decay goes
to tensors of rank >= 2. Checkpoints hold model, optimizer, RNG and the step,
which is also the data position, so ``--train.resume`` continues exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from nlpssl.checkpoints import find_resume_point, load_checkpoint, save_checkpoint
from nlpssl.distributed import cpu_only
from nlpssl.errors import UserError
from nlpssl.evaluation.plots import plot_curves
from nlpssl.objectives.base import Objective
from nlpssl.optim import learning_rate, make_optimizer
from nlpssl.sampling import make_loader


@dataclass
class TrainConfig:
    """Options of the training loop (the ``train`` section of every recipe)."""

    output_dir: str = "outputs/run"
    max_steps: int = 300
    batch_size: int = 32  # per process and micro-step
    grad_accum_steps: int = 1
    lr: float = 5e-4
    warmup_steps: int = 30
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-6
    max_grad_norm: float = 1.0
    precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 20
    save_every: int = 100
    keep_checkpoints: int = 2
    resume: str = ""  # "", "auto" (latest checkpoint in output_dir) or a checkpoint folder
    num_workers: int = 0
    group_by_length: bool = False  # batch rows of similar length (needs `lengths` from the recipe)
    cpu_threads: int | None = None  # torch threads on CPU; default: cores / local processes


Evaluator = Callable[[Objective], dict]
_PROGRESS_KEYS = {"step", "loss", "lr", "tokens_per_s", "images_per_s"}  # shown in the progress bar; anything else is printed


def train(
    objective: Objective,
    train_dataset,
    collator: Callable,
    cfg: TrainConfig,
    eval_dataset=None,
    evaluators: Sequence[Evaluator] = (),
    tokenizer=None,
    lengths: Sequence[int] | None = None,
) -> Objective:
    """Train ``objective`` for ``cfg.max_steps`` optimizer steps; returns the unwrapped objective.

    Writes ``output_dir/metrics.jsonl`` (one JSON object per log or eval event),
    ``output_dir/checkpoints/step_N`` every ``save_every`` steps, and
    ``output_dir/final`` (``objective.export`` plus the tokenizer).
    ``evaluators`` are called on the unwrapped objective at each evaluation and
    return extra metrics (e.g. STS Spearman); one whose ``should_stop`` is true
    afterwards ends training early, and one with ``on_resume(step)`` hears of a resume
    (see :class:`~nlpssl.evaluation.selection.KeepBest`).
    ``lengths`` (one per training row) are used when ``cfg.group_by_length`` is set.

    Example::

        objective = MaskedLM(build_mlm_model(tokenizer, dims))
        train(objective, blocks, MLMCollator(tokenizer), TrainConfig(max_steps=200), tokenizer=tokenizer)
    """
    accelerator = _make_accelerator(cfg)
    _set_cpu_threads(accelerator, cfg.cpu_threads)
    set_seed(cfg.seed)
    output_dir = Path(cfg.output_dir)
    optimizer = make_optimizer(objective, cfg.lr, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
    model, optimizer = accelerator.prepare(objective, optimizer)
    start_step = _resume(accelerator, output_dir, cfg.resume)
    for evaluator in evaluators if start_step else ():
        if hasattr(evaluator, "on_resume"):
            evaluator.on_resume(start_step)
    global_batch = cfg.batch_size * accelerator.num_processes
    if eval_dataset is not None and len(eval_dataset) < global_batch:
        raise UserError(
            f"the validation set has {len(eval_dataset)} rows, fewer than one global batch of {global_batch}; "
            f"hold out more data or lower train.batch_size"
        )
    if cfg.group_by_length and lengths is None:
        raise UserError("train.group_by_length=true, but this recipe gives no row lengths; set it to false")
    loop = _Loop(accelerator, model, optimizer, cfg, output_dir, tokenizer, lengths if cfg.group_by_length else None)
    loop.run(start_step, train_dataset, collator, eval_dataset, evaluators)
    return accelerator.unwrap_model(model)


def _make_accelerator(cfg: TrainConfig) -> Accelerator:
    if cfg.max_steps < 1 or cfg.batch_size < 1 or cfg.grad_accum_steps < 1:
        raise UserError("train.max_steps, train.batch_size and train.grad_accum_steps must be at least 1")
    try:
        return Accelerator(mixed_precision=cfg.precision, cpu=cpu_only())
    except ValueError as error:
        raise UserError(f"train.precision={cfg.precision}: {str(error).splitlines()[0]}") from None


def _set_cpu_threads(accelerator: Accelerator, requested: int | None) -> None:
    """Use the machine's cores on CPU: `accelerate launch` without --cpu pins OMP_NUM_THREADS=1."""
    if accelerator.device.type != "cpu":
        return
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(requested or max(1, cores // local_processes))


def _resume(accelerator: Accelerator, output_dir: Path, resume: str) -> int:
    checkpoint = find_resume_point(output_dir, resume)
    if checkpoint is None:
        return 0
    step = load_checkpoint(accelerator, checkpoint)
    accelerator.print(f"nlpssl: resumed from {checkpoint} at step {step}")
    return step


class _Loop:
    """State of one run: the wrapped model, the optimizer, the metrics file, the progress bar."""

    def __init__(self, accelerator: Accelerator, model, optimizer, cfg: TrainConfig, output_dir: Path, tokenizer, lengths) -> None:
        self.accelerator, self.model, self.optimizer, self.cfg = accelerator, model, optimizer, cfg
        self.output_dir, self.tokenizer, self.lengths = output_dir, tokenizer, lengths
        self.metrics_path = output_dir / "metrics.jsonl"
        self.unit = accelerator.unwrap_model(model).throughput_unit
        self.count_key = f"num_{self.unit}"

    def run(self, start_step: int, train_dataset, collator, eval_dataset, evaluators) -> None:
        cfg, accelerator = self.cfg, self.accelerator
        start = start_step * cfg.grad_accum_steps
        batches = iter(self._loader(train_dataset, collator, start_micro_step=start, lengths=self.lengths))
        self._truncate_metrics_after(start_step)
        bar = tqdm(total=cfg.max_steps, initial=start_step, disable=not accelerator.is_main_process, desc="train")
        self.model.train()  # from_pretrained returns eval mode: dropout would be off
        window = _Window()
        for step in range(start_step, cfg.max_steps):
            lr = learning_rate(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            window.add(*self._optimizer_step(batches, progress=(step + 1) / cfg.max_steps))
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.max_steps:
                record = window.flush(accelerator, self.unit) | {"step": done, "lr": lr}
                self._log(record)
                bar.set_postfix({"loss": f"{record['loss']:.4f}", f"{self.unit}/s": f"{record[f'{self.unit}_per_s']:,.0f}"})
            stop = False
            if (eval_dataset is not None or evaluators) and (done % cfg.eval_every == 0 or done == cfg.max_steps):
                self._log({"step": done} | self._evaluate(eval_dataset, collator, evaluators))
                stop = self._early_stop(evaluators)
            if done % cfg.save_every == 0 or done == cfg.max_steps or stop:
                save_checkpoint(accelerator, self.model, self.output_dir, done, cfg.keep_checkpoints, self.tokenizer)
            bar.update(1)
            if stop:
                accelerator.print(f"nlpssl: early stop at step {done}: no improvement in the last evaluations")
                break
        bar.close()
        self._export_final()

    def _optimizer_step(self, batches, progress: float) -> tuple[float, float, float]:
        """Accumulate ``grad_accum_steps`` micro-batches, clip, step. Returns (loss, tokens, seconds)."""
        cfg, accelerator = self.cfg, self.accelerator
        started, loss_sum, tokens = time.perf_counter(), 0.0, 0.0
        for micro in range(cfg.grad_accum_steps):
            batch = _to_device(next(batches), accelerator.device)
            last = micro == cfg.grad_accum_steps - 1
            sync = contextlib.nullcontext() if last else accelerator.no_sync(self.model)
            with sync:
                out = self.model(batch)
                accelerator.backward(out["loss"] / cfg.grad_accum_steps)
            loss_sum += out["loss"].item()
            tokens += float(out.get(self.count_key, batch_size_of(batch)))
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        accelerator.unwrap_model(self.model).on_optimizer_step(progress)
        return loss_sum / cfg.grad_accum_steps, tokens, time.perf_counter() - started

    def _loader(self, dataset, collator, start_micro_step: int, seed_offset: int = 0, lengths=None):
        acc = self.accelerator
        return make_loader(
            dataset, collator, self.cfg.batch_size, acc.process_index, acc.num_processes,
            self.cfg.seed + seed_offset, start_micro_step, self.cfg.num_workers, lengths,
        )

    @torch.no_grad()
    def _evaluate(self, eval_dataset, collator, evaluators) -> dict:
        model, accelerator = self.model, self.accelerator
        model.eval()
        metrics = {}
        if eval_dataset is not None:
            # A fixed seed and start: every evaluation sees the same batches and masks.
            batches = iter(self._loader(eval_dataset, collator, start_micro_step=0, seed_offset=10_007))
            total = torch.zeros(2, device=accelerator.device)  # (weighted loss, weight)
            one_pass = len(eval_dataset) // (self.cfg.batch_size * accelerator.num_processes)
            for _ in range(min(self.cfg.eval_batches, one_pass)):
                out = model(_to_device(next(batches), accelerator.device))
                weight = out.get("num_targets", torch.tensor(1.0)).float()
                total += torch.stack([out["loss"].float() * weight, weight])
            loss_sum, weight_sum = accelerator.reduce(total, reduction="sum").tolist()
            metrics["eval_loss"] = loss_sum / max(weight_sum, 1e-9)
            if accelerator.unwrap_model(model).eval_perplexity:
                metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
        for evaluator in evaluators:
            if accelerator.is_main_process:
                metrics |= evaluator(accelerator.unwrap_model(model))
        model.train()
        return metrics

    def _early_stop(self, evaluators) -> bool:
        """Whether an evaluator asks to stop (``should_stop``); evaluators run on the main process, so it decides."""
        wants = any(getattr(evaluator, "should_stop", False) for evaluator in evaluators)
        flag = torch.tensor([float(wants and self.accelerator.is_main_process)], device=self.accelerator.device)
        return self.accelerator.reduce(flag, reduction="sum").item() > 0

    def _log(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        with self.metrics_path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if any(k not in _PROGRESS_KEYS for k in record):  # evaluation results get a line of their own
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()))

    def _truncate_metrics_after(self, step: int) -> None:
        """On resume, drop records a crashed run wrote after its last checkpoint."""
        if not self.accelerator.is_main_process or not self.metrics_path.is_file():
            return
        if step == 0:
            self.metrics_path.unlink()
            return
        kept = [line for line in self.metrics_path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _export_final(self) -> None:
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            final = self.output_dir / "final"
            self.accelerator.unwrap_model(self.model).export(final)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(final)
            self.accelerator.print(f"nlpssl: saved {final}")
            plot_curves(self.output_dir)
        self.accelerator.wait_for_everyone()


class _Window:
    """Loss and throughput accumulated between two log events."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.tokens = 0.0
        self.seconds = 0.0

    def add(self, loss: float, tokens: float, seconds: float) -> None:
        self.losses.append(loss)
        self.tokens += tokens
        self.seconds += seconds

    def flush(self, accelerator: Accelerator, unit: str = "tokens") -> dict:
        stats = torch.tensor([sum(self.losses) / len(self.losses), self.tokens], device=accelerator.device)
        loss, tokens = accelerator.reduce(stats, reduction="sum").tolist()
        record = {"loss": loss / accelerator.num_processes, f"{unit}_per_s": tokens / max(self.seconds, 1e-9)}
        self.__init__()
        return record


def batch_size_of(batch: dict) -> int:
    """Rows in a batch dict (the first tensor's leading dimension)."""
    return next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
