"""Small builders shared by tests: a tiny corpus, tokenizer and BERT."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import datasets

from nlpssl.data.corpus import load_corpus
from nlpssl.data.tokenizer import train_tokenizer
from nlpssl.models.text import TransformerDims

datasets.disable_progress_bars()

TINY_DIMS = TransformerDims(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=128)
TINY_OVERRIDES = [
    "--model.hidden_size=32", "--model.num_layers=1", "--model.num_heads=2", "--model.intermediate_size=64",
    "--tokenizer.vocab_size=500", "--data.block_size=32", "--train.batch_size=4",
]


def bible_subset(documents: int = 120) -> datasets.Dataset:
    """The first ``documents`` chapters of the built-in corpus."""
    return load_corpus("bible-web").select(range(documents))


def tiny_wordpiece(texts) -> object:
    return train_tokenizer(texts, kind="wordpiece", vocab_size=500, model_max_length=128)


def tiny_blocks(documents: int, block_size: int = 32) -> tuple:
    """(tokenizer, packed blocks) of the first ``documents`` chapters: what the loop tests train on."""
    from nlpssl.data.text import tokenize_and_pack

    corpus = bible_subset(documents)
    tokenizer = tiny_wordpiece(corpus["text"])
    blocks, _ = tokenize_and_pack(corpus, tokenizer, block_size=block_size)
    return tokenizer, blocks


def read_metrics(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]


def train_losses(output_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(output_dir) if "loss" in r]


REPO = Path(__file__).resolve().parents[1]
ACCELERATE_LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
MLM_SCRIPT = str(REPO / "scripts" / "pretrain_mlm.py")
SCRIPT_ENV = os.environ | {"PYTHONPATH": str(REPO)}


def start_node(rank: int, port: int, args: list[str], cwd: Path = REPO) -> subprocess.Popen:
    """Node ``rank`` of two (``accelerate launch --num_machines 2``, one process each) of pretrain_mlm.py, meeting at 127.0.0.1:``port``."""
    command = [*ACCELERATE_LAUNCH, "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--multi_gpu", MLM_SCRIPT, *args]
    return subprocess.Popen(command, cwd=cwd, env=SCRIPT_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def gloo_group(rank: int, world: int, port: int, timeout_s: int = 60):
    """Inside a worker: one torch thread, then a gloo process group of ``world`` ranks on 127.0.0.1:``port``."""
    import torch
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=timeout_s))
    try:
        yield
    finally:
        dist.destroy_process_group()


def run_gloo_ranks(worker, world: int, out_dir: Path, start_method: str = "spawn", timeout_s: int = 60) -> list:
    """Run ``worker(rank, port, out_dir)`` in ``world`` processes; return what each saved to ``out_dir/rank{r}.pt``.

    ``fork`` starts in milliseconds (the worker must set one torch thread before any
    work, as :func:`gloo_group` does); ``spawn`` re-imports torch in each child.
    """
    import multiprocessing

    import torch

    context = multiprocessing.get_context(start_method)
    port = free_port()
    processes = [context.Process(target=worker, args=(rank, port, str(out_dir))) for rank in range(world)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout_s)
    hung = [p.pid for p in processes if p.is_alive()]
    for process in processes:
        if process.is_alive():
            process.terminate()
            process.join(5)
    assert not hung, f"gloo workers {hung} did not finish within {timeout_s} s"
    assert [p.exitcode for p in processes] == [0] * world, "a gloo worker failed; its traceback is in the captured stderr"
    return [torch.load(Path(out_dir) / f"rank{rank}.pt") for rank in range(world)]


@contextlib.contextmanager
def accelerator_rank(rank: int, world: int, port: int, processes_per_node: int | None = None):
    """Inside a forked worker: a CPU ``Accelerator`` as process ``rank`` of ``world`` over gloo, one torch thread.

    ``processes_per_node=1`` makes every process the local main process of a
    node of its own (with a folder of its own: nodes without a shared filesystem).
    """
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    per_node = processes_per_node or world
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank % per_node), LOCAL_WORLD_SIZE=str(per_node), OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    AcceleratorState._reset_state(reset_partial_state=True)  # a forked child inherits the parent's singletons
    GradientState._reset_state()
    try:
        yield Accelerator(cpu=True)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def load_script(name: str):
    """``scripts/<name>.py`` as a module, to call its ``main(argv)`` in this process."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
