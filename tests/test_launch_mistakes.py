"""Launch mistakes that end with one line: nodes with other configs, a main process out of reach, sharding where it cannot run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nlpssl.errors import UserError
from tests.helpers import (
    ACCELERATE_LAUNCH,
    MLM_SCRIPT,
    REPO,
    SCRIPT_ENV,
    TINY_OVERRIDES,
    free_port,
    gloo_group,
    run_gloo_ranks,
    start_node,
)



def test_nodes_started_with_different_configs_fail_naming_the_keys(tmp_path):
    port = free_port()
    args = [*TINY_OVERRIDES, "--train.max_steps=2", f"--train.output_dir={tmp_path}"]
    nodes = [start_node(0, port, args), start_node(1, port, [*args, "--train.lr=0.01", "--mlm.mask_prob=0.2"])]
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
    env = SCRIPT_ENV | {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NLPSSL_RENDEZVOUS_TIMEOUT": "2"}
    result = subprocess.run([sys.executable, MLM_SCRIPT, f"--train.output_dir={tmp_path}"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert f"could not reach the main process at 127.0.0.1:{port} within 2 s" in line
    assert f"TCP port {port} is open" in line


def test_under_accelerate_launch_the_launcher_names_address_port_and_timeout(tmp_path):
    """`accelerate launch` meets the other nodes itself (torchrun's rendezvous), before the script starts;
    its last line names what to check (the README quotes it)."""
    port = free_port()
    command = [*ACCELERATE_LAUNCH, "--num_machines", "2", "--num_processes", "2", "--machine_rank", "1", "--main_process_ip", "127.0.0.1",
               "--main_process_port", str(port), "--multi_gpu", "--rdzv_conf", "timeout=2", MLM_SCRIPT, f"--train.output_dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, env=SCRIPT_ENV, capture_output=True, text=True, timeout=120)
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
    result = subprocess.run([sys.executable, MLM_SCRIPT, f"--train.output_dir={tmp_path}"], cwd=REPO, env=SCRIPT_ENV | env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert message in line


def test_deepspeed_config_through_accelerate_launch_names_the_package(tmp_path):
    """Accelerate's launcher checks for DeepSpeed before the script starts; its last line says what to install."""
    if _installed("deepspeed"):
        pytest.skip("deepspeed is installed here")
    command = [*ACCELERATE_LAUNCH, "--config_file", str(REPO / "configs/accelerate/deepspeed_zero2.yaml"), "--num_processes", "2",
               MLM_SCRIPT, f"--train.output_dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, env=SCRIPT_ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "pip3 install deepspeed" in result.stderr.strip().splitlines()[-1]


def test_fsdp_config_on_a_machine_without_gpus_is_refused_through_accelerate_launch(tmp_path):
    """Accelerate would quietly run it as gloo DDP; nlpssl says why not."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    command = [*ACCELERATE_LAUNCH, "-q", "--config_file", str(REPO / "configs/accelerate/fsdp.yaml"), "--num_processes", "2",
               "--mixed_precision", "no", "--main_process_port", str(free_port()), MLM_SCRIPT, f"--train.output_dir={tmp_path}"]
    result = subprocess.run(command, cwd=REPO, env=SCRIPT_ENV, capture_output=True, text=True, timeout=180)
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
