"""Several nodes simulated on one machine: one node's two processes, two nodes under Slurm, nodes without a shared folder.

Two "nodes" are two ``accelerate launch --num_machines 2 --machine_rank 0|1`` commands
of one process each, meeting at 127.0.0.1 on a free port (gloo on CPU), started by
the Slurm batch script under stand-ins for ``srun`` and ``scontrol``. They must
train exactly as one node with two processes (``configs/accelerate/cpu_2proc.yaml``);
with a shared ``output_dir`` their checkpoints are one folder, with separate ones
(another working directory per node, the same relative ``output_dir``) the run says
so once and each node keeps its own. The reference run and the two-node run are
module fixtures: each costs a few launches' worth of imports, and three tests read them.
The launch mistakes that end with one line are in test_launch_mistakes.py (a module of
their own, so that test workers share the launches).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from nlpssl.checkpoints import complete_checkpoints
from tests.helpers import (
    ACCELERATE_LAUNCH,
    MLM_SCRIPT,
    REPO,
    SCRIPT_ENV,
    TINY_OVERRIDES,
    free_port,
    start_node,
    train_losses,
)

CPU_2PROC = str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml")
STEPS = ["--train.max_steps=3", "--train.log_every=1", "--train.save_every=3", "--train.eval_every=100", "--train.cpu_threads=1"]
NOTICE = "nlpssl: output_dir is not shared between nodes; each node keeps its own checkpoints"


def _two_nodes(args: list[str], cwds: tuple[Path, Path] = (REPO, REPO), timeout: int = 300) -> list[tuple[int, str, str]]:
    """Start node 0 and node 1 at once; (exit status, stdout, stderr) of each."""
    port = free_port()
    nodes = [start_node(rank, port, args, cwd) for rank, cwd in enumerate(cwds)]
    results = []
    for node in nodes:
        try:
            out, err = node.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            node.kill()
            out, err = node.communicate()
        results.append((node.returncode, out, err))
    return results


@pytest.mark.slow
def test_nodes_without_a_shared_output_dir_say_so_once_and_each_keep_checkpoints(tmp_path):
    cwds = (tmp_path / "node0", tmp_path / "node1")  # "run" is a different folder on each node
    for cwd in cwds:
        cwd.mkdir()
    nodes = _two_nodes([*TINY_OVERRIDES, *STEPS, "--train.output_dir=run"], cwds)
    assert [code for code, _, _ in nodes] == [0, 0], nodes[0][2][-2000:] + nodes[1][2][-2000:]
    assert sum(out.count(NOTICE) for _, out, _ in nodes) == 1
    for cwd in cwds:
        assert [p.name for p in complete_checkpoints(cwd / "run")] == ["step_000003"]
    node0, node1 = (cwd / "run" / "tokenizer" / "tokenizer.json" for cwd in cwds)
    assert node1.read_bytes() == node0.read_bytes()  # trained once, sent to the other node
    assert (cwds[0] / "run" / "final").is_dir() and not (cwds[1] / "run" / "final").exists()


FAKE_SRUN = """#!/bin/bash
# srun for one machine: run the task once per node of the allocation, all at once, SLURM_NODEID set.
while [[ "$1" == --* ]]; do shift; done
pids=()
for ((node = 0; node < SLURM_NNODES; node++)); do SLURM_NODEID=$node "$@" & pids+=($!); done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
"""
FAKE_SCONTROL = """#!/bin/bash
[[ "$1 $2" == "show hostnames" ]] && printf '127.0.0.1\\nnode-b\\n'
"""


@pytest.fixture(scope="module")
def one_node(tmp_path_factory) -> Path:
    """The reference run: one node, two processes, started from configs/accelerate/cpu_2proc.yaml."""
    out = tmp_path_factory.mktemp("one-node") / "run"
    done = subprocess.run(
        [*ACCELERATE_LAUNCH, "--config_file", CPU_2PROC, "--main_process_port", str(free_port()), MLM_SCRIPT,
         *TINY_OVERRIDES, *STEPS, f"--train.output_dir={out}"],
        cwd=REPO, env=SCRIPT_ENV, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def slurm_nodes(one_node, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path, int]:
    """scripts/slurm/pretrain_mlm.sbatch with srun and scontrol stood in for: two nodes of one process on this machine.

    It reuses the reference run's tokenizer: two trainings may break ties between equally frequent merges differently.
    """
    tmp_path = tmp_path_factory.mktemp("slurm")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    port = free_port()
    env = SCRIPT_ENV | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_NNODES": "2",
                 "SLURM_JOB_ID": "4242", "GPUS_PER_NODE": "1", "MAIN_PORT": str(port), "NLPSSL_REPO": str(REPO)}
    out = tmp_path / "run"
    done = subprocess.run(["bash", str(REPO / "scripts" / "slurm" / "pretrain_mlm.sbatch"), *TINY_OVERRIDES, *STEPS,
                           f"--tokenizer.path={one_node / 'tokenizer'}", f"--train.output_dir={out}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    return done, out, port


def _assert_every_rank_checkpointed(out: Path) -> None:
    (checkpoint,) = complete_checkpoints(out)  # one shared folder, complete, with both processes' RNG
    assert {"random_states_0.pkl", "random_states_1.pkl", "trainer_state.json", "model"} <= {p.name for p in checkpoint.iterdir()}


@pytest.mark.slow
def test_two_processes_from_the_cpu_config_train_and_checkpoint_every_rank(one_node):
    assert [step for step, _ in train_losses(one_node)] == [1, 2, 3]
    _assert_every_rank_checkpointed(one_node)


@pytest.mark.slow
def test_slurm_batch_script_runs_one_launcher_per_node(slurm_nodes):
    done, out, port = slurm_nodes
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"nlpssl: 2 node(s) x 1 process(es), main process 127.0.0.1:{port}" in done.stdout
    assert NOTICE not in done.stdout
    _assert_every_rank_checkpointed(out)


@pytest.mark.slow
def test_two_nodes_train_as_one_node_with_two_processes(one_node, slurm_nodes):
    done, out, _ = slurm_nodes
    assert done.returncode == 0, done.stderr[-3000:]
    assert train_losses(out) == train_losses(one_node)  # the same rows, masks and reductions, to the last bit
