"""Kill -9 at any instant: a run SIGKILLed mid-checkpoint, mid-prune, mid-delete and mid-step, resumed with
``resume=auto`` after each, logs the same records and ends with the same weights as a run never killed; no kill
leaves a checkpoint that resume would take but could not load.

Each killed run is a forked process (no start-up cost) that trains until the parent kills it. For the moments
that last microseconds the child parks there (it writes a marker file and sleeps) so the kill lands exactly;
``benchmarks/kill_resume.py`` kills scripts/pretrain_mlm.py at seeded random moments instead.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

import nlpssl.checkpoints
from nlpssl.checkpoints import complete_checkpoints, find_resume_point
from nlpssl.data.collators import MLMCollator
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.train import TrainConfig, train
from tests.conftest import REPO_ROOT
from tests.helpers import TINY_DIMS, read_metrics, tiny_blocks

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from kill_resume import checkpoint_problems  # noqa: E402

STEPS, SAVE_EVERY = 12, 2
TIMINGS = {"tokens_per_s"}


@pytest.fixture(scope="module")
def setup(one_torch_thread):
    return tiny_blocks(40)


def _train(setup, output_dir: Path) -> None:
    tokenizer, blocks = setup
    torch.manual_seed(0)
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    cfg = TrainConfig(
        output_dir=str(output_dir), max_steps=STEPS, batch_size=4, grad_accum_steps=2, log_every=1, save_every=SAVE_EVERY,
        keep_checkpoints=2, eval_every=4, eval_batches=2, warmup_steps=2, cpu_threads=1, resume="auto",
    )
    train(objective, blocks, MLMCollator(tokenizer), cfg, eval_dataset=blocks, tokenizer=tokenizer)


# ---- where the child parks until it is killed ----


def _park(marker: Path) -> None:
    marker.touch()
    time.sleep(600)


def _park_after_nth_call(module, name: str, nth: int, marker: Path, before: bool = False) -> None:
    """Replace ``module.name`` so that its ``nth`` call parks (before or after doing its work)."""
    original, calls = getattr(module, name), []

    def parked(*args, **kwargs):
        calls.append(1)
        if before and len(calls) == nth:
            _park(marker)
        result = original(*args, **kwargs)
        if not before and len(calls) == nth:
            _park(marker)
        return result

    setattr(module, name, parked)


def _park_mid_delete(marker: Path) -> None:
    """The first checkpoint deleted loses its weights file, then the child parks: a kill half-way through a delete."""
    original = shutil.rmtree

    def half_rmtree(path, *args, **kwargs):
        weights = Path(path) / "model.safetensors"
        if weights.is_file() and (Path(path) / "trainer_state.json").is_file():
            weights.unlink()
            _park(marker)
        return original(path, *args, **kwargs)

    shutil.rmtree = half_rmtree


MOMENTS = {
    # the 2nd save of the process: Accelerate's state is in step_N.tmp, model/ and trainer_state.json are not
    "checkpoint_write": lambda marker: _park_after_nth_call(nlpssl.checkpoints, "_save_state", 2, marker),
    # the 2nd save of the process: step_N is complete, the older ones not yet pruned
    "before_prune": lambda marker: _park_after_nth_call(nlpssl.checkpoints, "_prune", 2, marker, before=True),
    "mid_delete": _park_mid_delete,
    "mid_step": None,  # killed right after the 3rd step it logs, whatever it is doing then
}


def _killed_run(setup, run: Path, moment: str, marker: Path) -> None:
    """Child: park at ``moment`` (set up in this process only), then train."""
    # tqdm's write lock is a multiprocessing lock the fork shares with the parent: a child killed
    # while drawing its bar would hold it for ever and hang the parent's next bar. Its own lock, then.
    tqdm.set_lock(threading.RLock())
    if MOMENTS[moment] is not None:
        MOMENTS[moment](marker)
    _train(setup, run)


def _kill_at(setup, run: Path, moment: str, tmp_path: Path) -> None:
    marker = tmp_path / f"{moment}.parked"
    logged_before = _logged_steps(run)
    child = multiprocessing.get_context("fork").Process(target=_killed_run, args=(setup, run, moment, marker))
    child.start()
    deadline = time.monotonic() + 60
    if moment == "mid_step":
        while len(_logged_steps(run)) < len(logged_before) + 3 and child.is_alive():
            assert time.monotonic() < deadline
            time.sleep(0.001)
    else:
        while not marker.exists():
            assert child.is_alive() and time.monotonic() < deadline, f"the child never reached {moment}"
            time.sleep(0.005)
    if moment == "checkpoint_write":
        assert list((run / "checkpoints").glob("step_*.tmp")), "the kill must land inside a checkpoint write"
    os.kill(child.pid, signal.SIGKILL)
    child.join(30)
    assert child.exitcode == -signal.SIGKILL


def _logged_steps(run: Path) -> list[int]:
    return [r["step"] for r in read_metrics(run) if "loss" in r] if (run / "metrics.jsonl").is_file() else []


def _records(run: Path) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in read_metrics(run)]


def test_killed_at_any_moment_and_resumed_it_ends_as_if_never_killed(setup, tmp_path):
    straight = tmp_path / "straight"
    _train(setup, straight)
    run = tmp_path / "killed"
    for moment in ("checkpoint_write", "before_prune", "mid_delete", "mid_step"):
        _kill_at(setup, run, moment, tmp_path)
        resumable = complete_checkpoints(run)
        assert resumable, f"after the kill {moment}: no checkpoint to resume from"
        assert {p.name: checkpoint_problems(p) for p in resumable} == {p.name: [] for p in resumable}, moment
        assert find_resume_point(run, "auto") == resumable[-1]
    assert _logged_steps(run)[-1] < STEPS  # the kills came before the end
    _train(setup, run)
    assert _records(run) == _records(straight)
    final, expected = load_file(run / "final" / "model.safetensors"), load_file(straight / "final" / "model.safetensors")
    assert all(torch.equal(final[name], expected[name]) for name in expected)
    assert not list((run / "checkpoints").glob("*.tmp")) and not list((run / "checkpoints").glob(".deleting_*"))
