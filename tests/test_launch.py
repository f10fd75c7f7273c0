"""Several nodes simulated on one machine, and the launch mistakes that end with one line.

Two "nodes" are two ``accelerate launch --num_machines 2 --machine_rank 0|1`` commands
of one process each, meeting at 127.0.0.1 on a free port (gloo on CPU), started by
the Slurm batch script under stand-ins for ``srun`` and ``scontrol``. They must
train exactly as one node with two processes (``configs/accelerate/cpu_2proc.yaml``);
with a shared ``output_dir`` their checkpoints are one folder, with separate ones
(another working directory per node, the same relative ``output_dir``) the run says
so once and each node keeps its own. The reference run and the two-node run are
module fixtures: each costs a few launches' worth of imports, and three tests read them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nlpssl.checkpoints import complete_checkpoints
from nlpssl.errors import UserError
from tests.helpers import TINY_OVERRIDES, free_port, gloo_group, run_gloo_ranks, train_losses

REPO = Path(__file__).resolve().parents[1]
SCRIPT = str(REPO / "scripts" / "pretrain_mlm.py")
CPU_2PROC = str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml")
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch"]
STEPS = ["--train.max_steps=3", "--train.log_every=1", "--train.save_every=3", "--train.eval_every=100", "--train.cpu_threads=1"]
NOTICE = "nlpssl: output_dir is not shared between nodes; each node keeps its own checkpoints"
ENV = os.environ | {"PYTHONPATH": str(REPO)}


def _node(rank: int, port: int, args: list[str], cwd: Path = REPO) -> subprocess.Popen:
    command = [*LAUNCH, "--num_machines", "2", "--num_processes", "2", "--machine_rank", str(rank),
               "--main_process_ip", "127.0.0.1", "--main_process_port", str(port), "--multi_gpu", SCRIPT, *args]
    return subprocess.Popen(command, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _two_nodes(args: list[str], cwds: tuple[Path, Path] = (REPO, REPO), timeout: int = 300) -> list[tuple[int, str, str]]:
    """Start node 0 and node 1 at once; (exit status, stdout, stderr) of each."""
    port = free_port()
    nodes = [_node(rank, port, args, cwd) for rank, cwd in enumerate(cwds)]
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
        [*LAUNCH, "--config_file", CPU_2PROC, "--main_process_port", str(free_port()), SCRIPT,
         *TINY_OVERRIDES, *STEPS, f"--train.output_dir={out}"],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
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
    env = ENV | {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "node-[a-b]", "SLURM_NNODES": "2",
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


def test_nodes_started_with_different_configs_fail_naming_the_keys(tmp_path):
    port = free_port()
    args = [*TINY_OVERRIDES, "--train.max_steps=2", f"--train.output_dir={tmp_path}"]
    nodes = [_node(0, port, args), _node(1, port, [*args, "--train.lr=0.01", "--mlm.mask_prob=0.2"])]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode != 0
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(lines) == 1 and "mlm.mask_prob, train.lr differ between process 0 and process(es) 1" in lines[0], err[-2000:]


def _config_worker(rank: int, port: int, out_dir: str) -> None:
    import torch

    from nlpssl.launch import check_same_config

    configs = [{"train": {"lr": 1e-3, "seed": 0}, "data": {"corpus": "a.txt"}}, {"train": {"lr": 1e-3, "seed": 1}, "data": {"corpus": "a.txt"}}]
    with gloo_group(rank, 2, port):
        check_same_config(configs[0])  # the same everywhere: passes
        try:
            check_same_config(configs[rank])
            message = ""
        except UserError as error:
            message = str(error)
    torch.save(message, Path(out_dir) / f"rank{rank}.pt")


def test_config_fingerprints_are_compared_across_processes(tmp_path):
    messages = run_gloo_ranks(_config_worker, 2, tmp_path, "fork")
    assert messages[0] == messages[1] and "train.seed differ between process 0 and process(es) 1" in messages[0]
    assert "train.lr" not in messages[0]


def test_a_node_that_cannot_reach_the_main_process_fails_with_one_line(tmp_path):
    """Started without a launcher (srun, or by hand): nlpssl joins the process group and says where it looked."""
    port = free_port()  # nothing listens there
    env = ENV | {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NLPSSL_RENDEZVOUS_TIMEOUT": "2"}
    result = subprocess.run([sys.executable, SCRIPT, f"--train.output_dir={tmp_path}"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"could not reach the main process at 127.0.0.1:{port} within 2 s" in line
    assert f"TCP port {port} is open" in line


def test_under_accelerate_launch_the_launcher_names_address_port_and_timeout(tmp_path):
    """`accelerate launch` meets the other nodes itself (torchrun's rendezvous), before the script starts;
    its last line names what to check (the README quotes it)."""
    port = free_port()
    command = [*LAUNCH, "--num_machines", "2", "--num_processes", "2", "--machine_rank", "1", "--main_process_ip", "127.0.0.1",
               "--main_process_port", str(port), "--multi_gpu", "--rdzv_conf", "timeout=2", SCRIPT, f"--train.output_dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "DistNetworkError" in last and "2000ms" in last and f"(127.0.0.1, {port})" in last


@pytest.mark.parametrize(
    "env, message",
    [
        ({"ACCELERATE_USE_DEEPSPEED": "true"}, "DeepSpeed (distributed_type: DEEPSPEED), which is not installed: pip install deepspeed"),
        ({"ACCELERATE_USE_FSDP": "true"}, "asks for FSDP, which needs GPUs"),
    ],
)
def test_sharding_requested_where_it_cannot_run_is_one_line(tmp_path, env, message):
    if "DEEPSPEED" in next(iter(env)) and _installed("deepspeed"):
        pytest.skip("deepspeed is installed here")
    result = subprocess.run([sys.executable, SCRIPT, f"--train.output_dir={tmp_path}"], cwd=REPO, env=ENV | env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert message in line


def test_deepspeed_config_through_accelerate_launch_names_the_package(tmp_path):
    """Accelerate's launcher checks for DeepSpeed before the script starts; its last line says what to install."""
    if _installed("deepspeed"):
        pytest.skip("deepspeed is installed here")
    command = [*LAUNCH, "--config_file", str(REPO / "configs/accelerate/deepspeed_zero2.yaml"), "--num_processes", "2",
               SCRIPT, f"--train.output_dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "pip3 install deepspeed" in result.stderr.strip().splitlines()[-1]


def test_fsdp_config_on_a_machine_without_gpus_is_refused_through_accelerate_launch(tmp_path):
    """Accelerate would quietly run it as gloo DDP; nlpssl says why not."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    command = [*LAUNCH, "-q", "--config_file", str(REPO / "configs/accelerate/fsdp.yaml"), "--num_processes", "2",
               "--mixed_precision", "no", "--main_process_port", str(free_port()), SCRIPT, f"--train.output_dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=180)
    assert result.returncode != 0
    assert "error: the launch config asks for FSDP, which needs GPUs" in result.stderr


def test_bf16_on_hardware_without_it_suggests_no(monkeypatch):
    import nlpssl.launch

    monkeypatch.setattr(nlpssl.launch, "bf16_supported", lambda: False)
    with pytest.raises(UserError, match=r"train.precision=bf16: .* has no bf16 support; use train.precision=no"):
        nlpssl.launch.check_launch("bf16", env={})
    nlpssl.launch.check_launch("no", env={})  # full precision always runs


def test_bf16_is_supported_on_cpu_and_asked_of_cuda(monkeypatch):
    import torch

    from nlpssl.launch import bf16_supported

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bf16_supported()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)  # a V100
    assert not bf16_supported()


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
