"""The one training loop, on Hugging Face Accelerate: CPU, one GPU, many GPUs, many nodes.

It knows only the :class:`~nlpssl.objectives.base.Objective` contract. It counts
optimizer steps, not epochs; the learning rate is a pure function of the step
(warmup then cosine) so there is no scheduler state to resume; weight decay goes
to tensors of rank >= 2. Checkpoints hold model, optimizer, RNG, the step and the
data position, so ``--train.resume`` continues exactly.

The loss of an optimizer step is the mean over every target of all its
micro-batches on all processes (:func:`accumulate_gradients`), so gradient
accumulation and the number of processes do not change what is optimised.
Values are read from the device only at log, evaluation and save steps. The
step arithmetic (accumulation, evaluation sums, log windows) lives in :mod:`nlpssl.steps`.

Under FSDP and DeepSpeed ZeRO-3 no process holds the whole model between steps:
evaluation runs inside :func:`~nlpssl.sharding.whole_model`, and every export
(``final/``, ``best/``, a checkpoint's ``model/``) is written by the main process
from ``accelerator.get_state_dict``, gathered on every process.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, NamedTuple, Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

from nlpssl.checkpoints import find_resume_point, load_checkpoint, save_checkpoint
from nlpssl.config import flat_dict
from nlpssl.errors import UserError
from nlpssl.evaluation.evaluator import Evaluator, as_evaluator
from nlpssl.evaluation.plots import plot_curves
from nlpssl.model_card import write_model_card
from nlpssl.objectives.base import Objective
from nlpssl.optim import learning_rate, make_optimizer
from nlpssl.runtime import apply_model_options, make_accelerator, set_cpu_threads, trackers
from nlpssl.sampling import make_eval_loader, make_loader
from nlpssl.sharding import evaluation_in_lockstep, whole_model
from nlpssl.steps import StepTotals, Window, _to_device, accumulate_gradients, evaluation_totals


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
    eval_batches: int = 20  # batches of batch_size rows in all, shared by the processes
    save_every: int = 100
    keep_checkpoints: int = 2
    resume: str = ""  # "", "auto" (latest checkpoint in output_dir) or a checkpoint folder
    num_workers: int = 0
    group_by_length: bool = False  # batch rows of similar length (needs `lengths` from the recipe)
    cpu_threads: int | None = None  # torch threads on CPU; default: cores / local processes
    compile: bool = False  # torch.compile the objective (GPU: faster steps after a compile of a minute or so)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% more compute
    report_to: Literal["none", "tensorboard", "wandb", "mlflow", "trackio", "all"] = "none"  # experiment trackers (all: every installed one)


_PROGRESS_KEYS = {"step", "loss", "lr", "tokens_per_s", "images_per_s", "skipped_steps"}  # in the bar or silent; anything else is printed
MAX_SKIPPED_IN_A_ROW = 100  # fp16 updates the loss scaler may skip in a row before the run gives up


def train(
    objective: Objective,
    train_dataset,
    collator: Callable,
    cfg: TrainConfig,
    eval_dataset=None,
    evaluators: Sequence[Evaluator] = (),
    tokenizer=None,
    lengths: Sequence[int] | None = None,
    hparams: dict | None = None,
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
    ``hparams``: the recipe's resolved config, flat (:func:`nlpssl.config.flat_dict`), for the
    trackers of ``cfg.report_to`` and the model cards (``README.md``) written with every export;
    None: the ``train`` options alone.

    Example::

        objective = MaskedLM(build_mlm_model(tokenizer, dims))
        train(objective, blocks, MLMCollator(tokenizer), TrainConfig(max_steps=200), tokenizer=tokenizer)
    """
    if cfg.max_steps < 1 or cfg.batch_size < 1 or cfg.grad_accum_steps < 1:
        raise UserError("train.max_steps, train.batch_size and train.grad_accum_steps must be at least 1")
    output_dir = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.precision, cfg.batch_size, cfg.max_grad_norm, trackers(cfg.report_to), output_dir)
    hparams = hparams if hparams is not None else flat_dict({"train": cfg})
    set_cpu_threads(accelerator, cfg.cpu_threads)
    set_seed(cfg.seed)
    apply_model_options(objective, cfg.compile, cfg.gradient_checkpointing)
    optimizer = make_optimizer(objective, cfg.lr, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
    model, optimizer = accelerator.prepare(objective, optimizer)
    start = _resume(accelerator, output_dir, cfg.resume, cfg.grad_accum_steps)
    evaluators = [as_evaluator(evaluator) for evaluator in evaluators]  # plain functions keep working
    for evaluator in evaluators if start.step else ():
        evaluator.on_resume(start.step)
    if cfg.group_by_length and lengths is None:
        raise UserError("train.group_by_length=true, but this recipe gives no row lengths; set it to false")
    loop = _Loop(accelerator, model, optimizer, cfg, output_dir, tokenizer, lengths if cfg.group_by_length else None, hparams)
    accelerator.init_trackers(output_dir.name or "nlpssl", config=hparams)
    try:
        loop.run(start, train_dataset, collator, eval_dataset, evaluators)
    finally:
        # Not accelerator.end_training(): it also destroys the process group, which the
        # recipe still needs after train() returns (final evaluation, exports).
        for tracker in accelerator.trackers:
            tracker.finish()
    return accelerator.unwrap_model(model)


class Position(NamedTuple):
    """Where a run stands: optimizer steps done and micro-batches read (they differ when fp16 skipped updates)."""

    step: int
    micro_step: int


def _resume(accelerator: Accelerator, output_dir: Path, resume: str, grad_accum_steps: int) -> Position:
    checkpoint = find_resume_point(output_dir, resume)
    if checkpoint is None:
        return Position(0, 0)
    state = load_checkpoint(accelerator, checkpoint)
    accelerator.print(f"nlpssl: resumed from {checkpoint} at step {state['step']}")
    return Position(state["step"], state.get("micro_step", state["step"] * grad_accum_steps))


class _Loop:
    """State of one run: the wrapped model, the optimizer, the metrics file, the progress bar."""

    def __init__(
        self, accelerator: Accelerator, model, optimizer, cfg: TrainConfig, output_dir: Path, tokenizer, lengths,
        hparams: dict | None = None,
    ) -> None:
        self.accelerator, self.model, self.optimizer, self.cfg = accelerator, model, optimizer, cfg
        self.output_dir, self.tokenizer, self.lengths, self.hparams = output_dir, tokenizer, lengths, hparams or {}
        self.metrics_path = output_dir / "metrics.jsonl"
        self.unit = accelerator.unwrap_model(model).throughput_unit
        self.count_key = f"num_{self.unit}"

    def run(self, start: Position, train_dataset, collator, eval_dataset, evaluators) -> None:
        cfg, accelerator = self.cfg, self.accelerator
        step, micro_step = start
        batches = iter(self._loader(train_dataset, collator, start_micro_step=micro_step, lengths=self.lengths))
        if eval_dataset is not None and len(eval_dataset) < cfg.batch_size:
            raise UserError(
                f"the validation set has {len(eval_dataset)} rows, fewer than one batch of {cfg.batch_size}; "
                f"hold out more data or lower train.batch_size"
            )
        self._truncate_metrics_after(step)
        bar = tqdm(total=cfg.max_steps, initial=step, disable=not accelerator.is_main_process, desc="train")
        self.model.train()  # from_pretrained returns eval mode: dropout would be off
        window, skipped_in_a_row = Window(), 0
        while step < cfg.max_steps:
            lr = learning_rate(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            started = time.perf_counter()
            micro_batches = [_to_device(next(batches), accelerator.device) for _ in range(cfg.grad_accum_steps)]
            micro_step += cfg.grad_accum_steps
            totals = self._optimizer_step(micro_batches, progress=(step + 1) / cfg.max_steps)
            if totals is None:  # fp16 overflow: no update happened, the scaler lowered its scale; same step, next data
                skipped_in_a_row = _check_skips(skipped_in_a_row + 1)
                window.skipped += 1
                continue
            skipped_in_a_row = 0
            window.add(totals, time.perf_counter() - started)
            step += 1
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                record = window.flush(accelerator, self.unit) | {"step": step, "lr": lr}
                self._log(record)
                bar.set_postfix({"loss": f"{record['loss']:.4f}", f"{self.unit}/s": f"{record[f'{self.unit}_per_s']:,.0f}"})
            stop = False
            if (eval_dataset is not None or evaluators) and (step % cfg.eval_every == 0 or step == cfg.max_steps):
                self._log({"step": step} | self._evaluate(eval_dataset, collator, evaluators, step))
                stop = self._early_stop(evaluators)
            if step % cfg.save_every == 0 or step == cfg.max_steps or stop:
                save_checkpoint(
                    accelerator, self.model, self.output_dir, step, cfg.keep_checkpoints, self.tokenizer, micro_step,
                    describe=lambda folder, step=step: self._write_card(folder, step),
                )
            bar.update(1)
            if stop:
                accelerator.print(f"nlpssl: early stop at step {step}: no improvement in the last evaluations")
                break
        bar.close()
        self._export_final(step)

    def _optimizer_step(self, micro_batches: Sequence[dict], progress: float) -> StepTotals | None:
        """Accumulate the micro-batches, clip, step; None when fp16's scaler skipped the update."""
        cfg, accelerator = self.cfg, self.accelerator
        totals = accumulate_gradients(accelerator, self.model, micro_batches, self.count_key)
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if accelerator.optimizer_step_was_skipped:
            return None
        accelerator.unwrap_model(self.model).on_optimizer_step(progress)
        return totals

    def _loader(self, dataset, collator, start_micro_step: int, lengths=None):
        acc = self.accelerator
        return make_loader(
            dataset, collator, self.cfg.batch_size, acc.process_index, acc.num_processes,
            self.cfg.seed, start_micro_step, self.cfg.num_workers, lengths, pin_memory=self._pin_memory,
        )

    @property
    def _pin_memory(self) -> bool:
        """Page-locked batches on CUDA, so ``non_blocking`` copies overlap with compute (elsewhere it buys nothing)."""
        return self.accelerator.device.type == "cuda"

    @torch.no_grad()
    def _evaluate(self, eval_dataset, collator, evaluators, step: int) -> dict:
        model, accelerator = self.model, self.accelerator
        model.eval()
        metrics = {}
        lockstep = evaluation_in_lockstep(accelerator)  # ZeRO-3: forward passes are collectives
        with whole_model(accelerator, model):  # FSDP: every process gathers every parameter
            if eval_dataset is not None:
                metrics |= self._evaluation_loss(eval_dataset, collator, lockstep)
            for evaluator in evaluators:
                if accelerator.is_main_process or lockstep:
                    results = evaluator(accelerator.unwrap_model(model))
                    if accelerator.is_main_process:
                        metrics |= results
        self._export_requested(evaluators, step, metrics)
        model.train()
        return metrics

    def _evaluation_loss(self, eval_dataset, collator, lockstep: bool = False) -> dict:
        # The same rows and masks at every evaluation and on any number of processes; processes may run
        # different numbers of batches, so the unwrapped model (no DDP collectives) runs them. In lockstep
        # (ZeRO-3) each process runs as many as the busiest one, the extra ones uncounted.
        accelerator = self.accelerator
        batches = self._eval_batches(eval_dataset, collator, accelerator.process_index, materialise=lockstep)
        counted = None
        if lockstep:
            counted = len(batches)
            first_rank = self._eval_batches(eval_dataset, collator, rank=0, materialise=False)  # rank 0 runs the most
            filler = batches[0] if batches else next(iter(first_rank))
            batches += [filler] * (len(first_rank) - counted)
        objective = accelerator.unwrap_model(self.model)
        total = evaluation_totals(objective, batches, accelerator.device, counted)  # (2,)
        loss_sum, weight_sum = accelerator.reduce(total, reduction="sum").tolist()
        metrics = {"eval_loss": loss_sum / max(weight_sum, 1e-9)}
        if objective.eval_perplexity:
            metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 50.0))
        return metrics

    def _eval_batches(self, eval_dataset, collator, rank: int, materialise: bool = True):
        """Process ``rank``'s evaluation batches (a list), or their loader."""
        loader = make_eval_loader(
            eval_dataset, collator, self.cfg.batch_size, rank, self.accelerator.num_processes,
            self.cfg.seed + 10_007, self.cfg.eval_batches, self.cfg.num_workers, self._pin_memory,
        )
        return list(loader) if materialise else loader

    def _export_requested(self, evaluators, step: int, metrics: dict) -> None:
        """Write the exports the evaluators asked for (KeepBest's ``best/``): the main process decided them."""
        if not evaluators:
            return
        folders = broadcast_object_list([[e.pending_export() for e in evaluators] if self.accelerator.is_main_process else None])[0]
        for evaluator, folder in zip(evaluators, folders):
            if folder is not None:
                self._export(Path(folder), step, metrics)
                if self.accelerator.is_main_process:
                    evaluator.on_exported(Path(folder))
        self.accelerator.wait_for_everyone()

    def _export(self, directory: Path, step: int, metrics: dict | None = None) -> None:
        """``objective.export`` of the weights gathered on every process and its model card, written by the main process.

        ``metrics``: evaluation results not in metrics.jsonl yet (the evaluation that asked for the export).
        """
        weights = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            self.accelerator.unwrap_model(self.model).export(directory, state_dict=weights)
            self._write_card(directory, step, metrics)

    def _write_card(self, directory: Path, step: int, metrics: dict | None = None) -> None:
        cfg = self.cfg
        seen = step * cfg.batch_size * cfg.grad_accum_steps * self.accelerator.num_processes
        objective = self.accelerator.unwrap_model(self.model)
        write_model_card(directory, objective, self.output_dir, step, self.hparams, seen, metrics)

    def _early_stop(self, evaluators) -> bool:
        """Whether an evaluator asks to stop (``should_stop``); evaluators run on the main process, so it decides."""
        wants = any(evaluator.should_stop for evaluator in evaluators)
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
        if self.accelerator.trackers:
            numbers = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}
            self.accelerator.log(numbers, step=record["step"])

    def _truncate_metrics_after(self, step: int) -> None:
        """On resume, drop records a crashed run wrote after its last checkpoint."""
        if not self.accelerator.is_main_process or not self.metrics_path.is_file():
            return
        if step == 0:
            self.metrics_path.unlink()
            return
        kept = [line for line in self.metrics_path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        self.metrics_path.write_text("".join(line + "\n" for line in kept))

    def _export_final(self, step: int) -> None:
        self.accelerator.wait_for_everyone()
        final = self.output_dir / "final"
        self._export(final, step)
        if self.accelerator.is_main_process:
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(final)
            self.accelerator.print(f"nlpssl: saved {final}")
            plot_curves(self.output_dir)
        self.accelerator.wait_for_everyone()


def _check_skips(skipped_in_a_row: int) -> int:
    """Give up when fp16's scaler keeps skipping: the gradients are not finite at any scale."""
    if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
        raise UserError(
            f"fp16: the loss scaler skipped {skipped_in_a_row} updates in a row (inf/NaN gradients); "
            f"use train.precision=bf16 or no, or lower train.lr"
        )
    return skipped_in_a_row
