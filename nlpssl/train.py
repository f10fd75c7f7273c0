"""The one training loop, on Hugging Face Accelerate: CPU, one GPU, many GPUs, many nodes.

It knows only the :class:`~nlpssl.objectives.base.Objective` contract. It counts
optimizer steps, not epochs; the learning rate is a pure function of the step
(warmup then cosine) so there is no scheduler state to resume; weight decay goes
to tensors of rank >= 2. Checkpoints hold model, optimizer, RNG, the step and the
data position, so ``--train.resume`` continues exactly.

The loss of an optimizer step is the mean over every target of all its
micro-batches on all processes (:func:`accumulate_gradients`), so gradient
accumulation and the number of processes do not change what is optimised.
Values are read from the device at log, evaluation and save steps, and once per
step three flags (:func:`~nlpssl.steps.check_step`): a step whose loss or gradient
norm is not finite on some process is skipped on all (``train.max_bad_steps`` in a
row end the run), and a stop signal (:mod:`nlpssl.preemption`) seen by any process
makes every process save that step and exit with status 75. The step arithmetic
(accumulation, evaluation sums, log windows, the check) lives in :mod:`nlpssl.steps`.

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

from nlpssl.atomic import atomic_folder, atomic_write_text, disk_errors
from nlpssl.checkpoints import checkpoint_dir, find_resume_point, load_checkpoint, parameter_bytes, save_checkpoint
from nlpssl.config import flat_dict
from nlpssl.errors import UserError
from nlpssl.evaluation.evaluator import Evaluator, as_evaluator
from nlpssl.evaluation.plots import plot_curves
from nlpssl.model_card import write_model_card
from nlpssl.objectives.base import Objective
from nlpssl.optim import learning_rate, make_optimizer
from nlpssl.preemption import PREEMPTED_EXIT_STATUS, Preempted, StopSignals
from nlpssl.run_folder import check_fresh_start
from nlpssl.runtime import apply_model_options, make_accelerator, set_cpu_threads, trackers
from nlpssl.sampling import make_eval_loader, make_loader
from nlpssl.sharding import evaluation_in_lockstep, optimizer_steps_in_backward, whole_model
from nlpssl.steps import StepCheck, StepTotals, Window, _to_device, accumulate_gradients, check_step, evaluation_totals


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
    optimizer: Literal["adamw", "sgd"] = "adamw"  # sgd: with momentum and L2 decay (SimSiam, BYOL on CIFAR)
    sgd_momentum: float = 0.9
    adam_beta1: float = 0.9
    adam_beta2: float = 0.98
    adam_eps: float = 1e-6
    max_grad_norm: float = 1.0
    max_bad_steps: int = 3  # optimizer steps in a row whose loss or gradient norm is not finite (each skipped) before the run stops
    precision: Literal["no", "bf16", "fp16"] = "no"
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 20  # batches of batch_size rows in all, shared by the processes
    save_every: int = 100
    keep_checkpoints: int = 2
    resume: str = ""  # "", "auto" (latest checkpoint in output_dir) or a checkpoint folder
    overwrite: bool = False  # start over in an output_dir that holds another run: the scripts clear it at start (nlpssl.run_folder)
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
    if cfg.max_bad_steps < 1:
        raise UserError(f"train.max_bad_steps={cfg.max_bad_steps}: must be at least 1 (non-finite steps skipped in a row before the run stops)")
    output_dir = Path(cfg.output_dir)
    accelerator = make_accelerator(cfg.precision, cfg.batch_size, cfg.max_grad_norm, trackers(cfg.report_to), output_dir)
    if not (cfg.resume or cfg.overwrite):  # before any model or optimizer work: a refused start costs nothing
        check_fresh_start(accelerator, output_dir)
    hparams = hparams if hparams is not None else flat_dict({"train": cfg})
    set_cpu_threads(accelerator, cfg.cpu_threads)
    set_seed(cfg.seed)
    apply_model_options(objective, cfg.compile, cfg.gradient_checkpointing)
    optimizer = make_optimizer(
        objective, cfg.lr, cfg.weight_decay, (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps, cfg.optimizer, cfg.sgd_momentum,
    )
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
    """Where a run stands: optimizer steps done and micro-batches read (they differ when updates were skipped)."""

    step: int
    micro_step: int


class _Attempt(NamedTuple):
    """One optimizer step attempted: its sums (None when no update happened), what the processes agreed on, why skipped."""

    totals: StepTotals | None
    check: StepCheck
    skipped: Literal["scaler", "non-finite"] | None


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
        window, skipped_in_a_row, bad_in_a_row = Window(), 0, 0
        saved = start  # the position of the newest checkpoint (a resumed run's, until this run saves)
        with bar, StopSignals() as signals:  # SIGTERM / SIGINT / SIGUSR1: finish this step, save it, exit 75
            while step < cfg.max_steps:
                lr = learning_rate(step, cfg.lr, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                started = time.perf_counter()
                micro_batches = [_to_device(next(batches), accelerator.device) for _ in range(cfg.grad_accum_steps)]
                micro_step += cfg.grad_accum_steps
                attempt = self._optimizer_step(micro_batches, (step + 1) / cfg.max_steps, signals)
                if attempt.skipped == "scaler":  # fp16 overflow: no update happened, the scaler lowered its scale; same step, next data
                    skipped_in_a_row = _check_skips(skipped_in_a_row + 1)
                    window.skipped += 1
                elif attempt.skipped == "non-finite":  # no update happened, weights and optimizer state untouched; same step, next data
                    bad_in_a_row = self._skip_non_finite(step + 1, attempt.check, bad_in_a_row + 1, lr)
                    window.skipped += 1
                else:
                    skipped_in_a_row = bad_in_a_row = 0
                    window.add(attempt.totals, time.perf_counter() - started)
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
                        saved = self._save_checkpoint(Position(step, micro_step))
                    bar.update(1)
                    if stop:
                        accelerator.print(f"nlpssl: early stop at step {step}: no improvement in the last evaluations")
                        break
                if attempt.check.stop_requested and step < cfg.max_steps:  # in the last step the run just finishes
                    self._stop_on_signal(signals.received, Position(step, micro_step), saved)
        self._export_final(step)

    def _optimizer_step(self, micro_batches: Sequence[dict], progress: float, signals: StopSignals | None = None) -> _Attempt:
        """Accumulate the micro-batches, clip, check, step.

        No update when the loss or the gradient norm is not finite on some
        process (weights and optimizer state stay as they were), or when fp16's
        scaler skipped it (with a scaler, non-finite gradients are its call: it
        lowers its scale). ``signals``: this process's stop signals, read after
        the backward pass; the returned check says whether any process got one.
        """
        accelerator = self.accelerator
        totals = accumulate_gradients(accelerator, self.model, micro_batches, self.count_key)
        grad_norm = self._clip_gradients()
        check = check_step(accelerator, totals.loss_sum, grad_norm, signals is not None and signals.received is not None)
        if not check.finite and accelerator.scaler is None and not optimizer_steps_in_backward(accelerator):
            self.optimizer.zero_grad(set_to_none=True)
            return _Attempt(None, check, "non-finite")
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if accelerator.optimizer_step_was_skipped:
            return _Attempt(None, check, "scaler")
        accelerator.unwrap_model(self.model).on_optimizer_step(progress)
        return _Attempt(totals, check, None)

    def _clip_gradients(self):
        """Clip to ``train.max_grad_norm`` (0: no clipping); returns the gradient norm before clipping (None: unknown)."""
        max_norm = self.cfg.max_grad_norm if self.cfg.max_grad_norm > 0 else math.inf  # inf: the norm only (gradients x 1.0)
        norm = self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm  # FSDP2: a DTensor

    def _skip_non_finite(self, step: int, check: StepCheck, in_a_row: int, lr: float) -> int:
        """Log a skipped attempt at ``step``; a one-line error after ``train.max_bad_steps`` in a row. Returns ``in_a_row``."""
        self._log({"step": step, "skipped_non_finite": check.non_finite})
        if in_a_row >= self.cfg.max_bad_steps:
            precision = " or train.precision=no" if self.cfg.precision != "no" else ""
            raise UserError(
                f"step {step}: non-finite {check.non_finite} in {in_a_row} attempts in a row "
                f"(train.max_bad_steps={self.cfg.max_bad_steps}); try a lower train.lr (now {lr:.3g}){precision}"
            )
        return in_a_row

    def _save_checkpoint(self, position: Position) -> Position:
        """Write ``checkpoints/step_N`` (every process takes part); returns ``position``."""
        step, micro_step = position
        save_checkpoint(
            self.accelerator, self.model, self.output_dir, step, self.cfg.keep_checkpoints, self.tokenizer, micro_step,
            describe=lambda folder: self._write_card(folder, step),
        )
        return position

    def _stop_on_signal(self, received: str | None, position: Position, saved: Position) -> None:
        """Save ``position`` (unless the newest checkpoint holds it already) and raise :class:`Preempted` on every process."""
        if saved != position:
            self._save_checkpoint(position)
        checkpoint = checkpoint_dir(self.output_dir, position.step)
        name = received or "a stop signal to another process"
        self.accelerator.print(
            f"nlpssl: {name}: stopped after step {position.step} and saved {checkpoint}; "
            f"continue with --train.resume=auto (exit status {PREEMPTED_EXIT_STATUS})"
        )
        raise Preempted(name, position.step, checkpoint)

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
        total = evaluation_totals(objective, batches, accelerator.device, counted)  # (2 + counts,)
        loss_sum, weight_sum, *count_sums = accelerator.reduce(total, reduction="sum").tolist()
        metrics = {"eval_loss": loss_sum / max(weight_sum, 1e-9)}
        metrics |= {f"eval_{name}": value / max(weight_sum, 1e-9) for name, value in zip(objective.eval_count_names, count_sums)}
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
                self._export(Path(folder), step, metrics, then=evaluator.on_exported)
        self.accelerator.wait_for_everyone()

    def _export(
        self, directory: Path, step: int, metrics: dict | None = None, then: Callable[[Path], None] | None = None,
    ) -> None:
        """``objective.export`` of the weights gathered on every process and its model card, written by the main process.

        Written into ``directory.tmp`` and renamed when complete (a kill mid-write
        leaves the previous ``best/`` or ``final/`` whole); ``then(folder)`` adds
        to it first (the tokenizer, ``best.json``). A full disk or a folder that
        cannot be written: one line naming it and the space needed.
        ``metrics``: evaluation results not in metrics.jsonl yet (the evaluation that asked for the export).
        """
        weights = self.accelerator.get_state_dict(self.model)
        if self.accelerator.is_main_process:
            objective = self.accelerator.unwrap_model(self.model)
            needed = parameter_bytes(objective)
            with disk_errors(directory, needed, f"the model export {directory.name}/"), atomic_folder(directory) as partial:
                objective.export(partial, state_dict=weights)
                self._write_card(partial, step, metrics)
                if then is not None:
                    then(partial)

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
        """On resume, drop records a crashed run wrote after its last checkpoint, and a line torn by a kill mid-write."""
        if not self.accelerator.is_main_process or not self.metrics_path.is_file():
            return
        if step == 0:
            self.metrics_path.unlink()
            return
        lines = [(line, _record_step(line)) for line in self.metrics_path.read_text().splitlines()]
        kept = [line for line, at in lines if at is not None and at <= step]
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in kept))

    def _export_final(self, step: int) -> None:
        self.accelerator.wait_for_everyone()
        final = self.output_dir / "final"
        self._export(final, step, then=self.tokenizer.save_pretrained if self.tokenizer is not None else None)
        if self.accelerator.is_main_process:
            self.accelerator.print(f"nlpssl: saved {final}")
            plot_curves(self.output_dir)
        self.accelerator.wait_for_everyone()


def _record_step(line: str) -> int | None:
    """The step of one line of metrics.jsonl; None for a line torn by a kill (not a whole JSON object)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record.get("step") if isinstance(record, dict) else None


def _check_skips(skipped_in_a_row: int) -> int:
    """Give up when fp16's scaler keeps skipping: the gradients are not finite at any scale."""
    if skipped_in_a_row >= MAX_SKIPPED_IN_A_ROW:
        raise UserError(
            f"fp16: the loss scaler skipped {skipped_in_a_row} updates in a row (inf/NaN gradients); "
            f"use train.precision=bf16 or no, or lower train.lr"
        )
    return skipped_in_a_row
