"""Preemption: SIGTERM, SIGINT or SIGUSR1 make every process finish the step, save it and exit with status 75;
``resume=auto`` then continues exactly as if nothing had happened.

One process: a real signal from outside to a forked training process. Two processes (gloo, forked): the
signal reaches rank 1 only, and both stop at the same step.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import torch

import nlpssl.train
from nlpssl.checkpoints import complete_checkpoints
from nlpssl.data.collators import MLMCollator
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.preemption import PREEMPTED_EXIT_STATUS, Preempted, StopSignals
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, accelerator_rank, read_metrics, run_gloo_ranks, tiny_blocks

STEPS = 8
TIMINGS = {"tokens_per_s"}


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    return tiny_blocks(40)


def _train(setup, output_dir: Path, step_seconds: float = 0.0, **options):
    """The tiny MLM run of these tests (every process the same); ``step_seconds``: a pause after each update."""
    tokenizer, blocks = setup
    torch.manual_seed(0)
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    if step_seconds:
        objective.on_optimizer_step = lambda progress: time.sleep(step_seconds)  # slow enough to be signalled mid-run
    defaults = dict(
        max_steps=STEPS, batch_size=4, grad_accum_steps=2, log_every=1, save_every=5, eval_every=4, eval_batches=2,
        warmup_steps=2, cpu_threads=1,
    )
    cfg = TrainConfig(output_dir=str(output_dir), **(defaults | options))
    return train(objective, blocks, MLMCollator(tokenizer), cfg, eval_dataset=blocks, tokenizer=tokenizer)


def _records(output_dir: Path) -> list[dict]:
    """metrics.jsonl without the timings (which differ from run to run)."""
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in read_metrics(output_dir)]


@pytest.fixture(scope="module")
def straight(setup, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    _train(setup, run)
    return run


def _wait_for(condition, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    return [r["step"] for r in read_metrics(run) if "loss" in r] if path.is_file() else []


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=lambda signum: signal.Signals(signum).name)
def test_a_stop_signal_saves_the_step_exits_75_and_resume_continues_exactly(setup, straight, tmp_path, signum):
    run = tmp_path / "run"
    child = multiprocessing.get_context("fork").Process(target=_train, args=(setup, run, 0.05))
    child.start()
    _wait_for(lambda: len(_logged_steps(run)) >= 2)
    os.kill(child.pid, signum)
    child.join(60)
    assert child.exitcode == PREEMPTED_EXIT_STATUS
    stopped_at = _logged_steps(run)[-1]
    assert 2 <= stopped_at < STEPS and stopped_at != 5  # not a regular save step: this checkpoint is the signal's
    assert complete_checkpoints(run)[-1].name == f"step_{stopped_at:06d}"
    assert not (run / "final").exists()
    _train(setup, run, resume="auto")
    assert _records(run) == _records(straight)


def test_handlers_are_restored_and_a_repeated_signal_changes_nothing():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == "SIGUSR1"
        assert signal.getsignal(signal.SIGTERM) != before
    assert signal.getsignal(signal.SIGTERM) == before


# ---- two processes: the signal reaches rank 1 only ----


def _two_process_worker(setup, case: str, rank: int, port: int, out_dir: str) -> None:
    with accelerator_rank(rank, 2, port) as accelerator:
        nlpssl.train.make_accelerator = lambda *args: accelerator  # the loop takes this (gloo) Accelerator
        run = Path(out_dir) / "run"
        result = {}
        if case == "preempted" and rank == 1:  # the signal arrives during step 3's forward pass, on rank 1 only
            forwards = []
            original = MaskedLM.forward

            def forward(self, batch):
                forwards.append(1) if self.training else None
                if len(forwards) == 5:  # 2 micro-batches per step: the 5th is step 3's first
                    os.kill(os.getpid(), signal.SIGTERM)
                return original(self, batch)

            MaskedLM.forward = forward
        try:
            _train(setup, run, resume="auto" if case == "resumed" else "")
        except Preempted as stop:
            result = {"exit_status": stop.code, "step": stop.step, "signal": stop.signal_name}
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def test_two_processes_stop_at_the_same_step_when_one_is_signalled_and_resume_exactly(setup, tmp_path):
    def launch(case: str, folder: str) -> list[dict]:
        (tmp_path / folder).mkdir(exist_ok=True)
        return run_gloo_ranks(lambda *args: _two_process_worker(setup, case, *args), 2, tmp_path / folder, "fork", timeout_s=120)

    launch("straight", "straight")
    stopped = launch("preempted", "preempted")
    assert [(r["exit_status"], r["step"]) for r in stopped] == [(PREEMPTED_EXIT_STATUS, 3)] * 2
    assert [r["signal"] for r in stopped] == ["a stop signal to another process", "SIGTERM"]
    checkpoint = complete_checkpoints(tmp_path / "preempted" / "run")[-1]
    assert checkpoint.name == "step_000003" and {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in checkpoint.iterdir()}
    assert launch("resumed", "preempted") == [{}, {}]
    assert _records(tmp_path / "preempted" / "run") == _records(tmp_path / "straight" / "run")
