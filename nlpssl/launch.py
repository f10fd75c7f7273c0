"""Starting a run's processes, and the checks that must pass before any work: one line for each expected mistake.

- :func:`check_launch`: what ``accelerate launch`` asked for can run here
  (DeepSpeed installed, FSDP and DeepSpeed only with GPUs, bf16 only where the
  hardware has it);
- :func:`start_processes`: join the process group; a node that cannot reach the
  main process gets one line naming the address, port and timeout;
- :func:`check_same_config`: every process was given the same resolved config;
- :func:`announce_output_sharing`: on several nodes, whether ``output_dir`` is
  one shared folder, said once at start;
- :func:`send_folder`: a small folder the main process wrote (a trained
  tokenizer) copied to nodes that cannot see it.

Environment: ``NLPSSL_RENDEZVOUS_TIMEOUT`` (seconds) bounds the wait for the
other processes when joining the process group (it is also the timeout of every
collective of the run; Accelerate's default when unset).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Mapping

import torch
import torch.distributed as dist
from accelerate import PartialState

from nlpssl.checkpoints import sees_main_process_files
from nlpssl.distributed import cpu_only, gather_objects
from nlpssl.errors import UserError, first_line

RENDEZVOUS_TIMEOUT_ENV = "NLPSSL_RENDEZVOUS_TIMEOUT"


def requested_backend(env: Mapping[str, str] = os.environ) -> str:
    """What the launch config asked for: "deepspeed", "fsdp" or "ddp" (Accelerate's environment variables)."""
    if env.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return "deepspeed"
    if env.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        return "fsdp"
    return "ddp"


def check_launch(precision: str, env: Mapping[str, str] = os.environ) -> None:
    """Fail with one line when the launch config or ``train.precision`` cannot run on this machine.

    Accelerate would otherwise ignore an FSDP or DeepSpeed config without a word
    on a machine without GPUs (its CPU processes always run as gloo DDP).

    Example::

        check_launch("bf16")   # UserError on a GPU without bf16
    """
    backend = requested_backend(env)
    if backend == "deepspeed" and not _importable("deepspeed"):
        raise UserError("the launch config asks for DeepSpeed (distributed_type: DEEPSPEED), which is not installed: pip install deepspeed")
    if backend in ("deepspeed", "fsdp") and cpu_only():
        name = "DeepSpeed" if backend == "deepspeed" else "FSDP"
        raise UserError(
            f"the launch config asks for {name}, which needs GPUs: Accelerate runs processes without a GPU as gloo DDP "
            f"and would ignore it; on CPU use configs/accelerate/cpu_2proc.yaml"
        )
    if backend == "fsdp" and env.get("FSDP_VERSION", "2") != "2":
        raise UserError("nlpssl runs FSDP2 only: set fsdp_version: 2 in the launch config (see configs/accelerate/fsdp.yaml)")
    check_precision(precision)


def check_precision(precision: str) -> None:
    """``bf16`` only where the device computes in it (CPUs and Ampere or newer GPUs do)."""
    if precision == "bf16" and not bf16_supported():
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "this device"
        raise UserError(f"train.precision=bf16: {device} has no bf16 support; use train.precision=no (or fp16 on a GPU)")


def bf16_supported() -> bool:
    """Whether the training device computes in bfloat16 (the CPU always can; CUDA from compute capability 8.0).

    Older GPUs only emulate it (slowly): torch's ``is_bf16_supported()`` says yes for them, this says no.
    """
    if torch.cuda.is_available():
        try:
            return torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.3
            return torch.cuda.get_device_capability()[0] >= 8
    return True  # CPU; MPS and XPU: Accelerate decides


def start_processes() -> PartialState:
    """Join (or, alone, start) the run's processes; the same state Accelerate's ``Accelerator`` then uses.

    A node that cannot reach the main process within the timeout
    (``NLPSSL_RENDEZVOUS_TIMEOUT``, else Accelerate's) ends with one line naming
    the main process's address, port and the timeout.
    """
    timeout = rendezvous_timeout()
    with rendezvous_errors():
        return PartialState(cpu=cpu_only(), **({"timeout": timeout} if timeout else {}))


def rendezvous_timeout() -> timedelta | None:
    """``NLPSSL_RENDEZVOUS_TIMEOUT`` as a timedelta; None when unset."""
    raw = os.environ.get(RENDEZVOUS_TIMEOUT_ENV)
    if not raw:
        return None
    try:
        return timedelta(seconds=float(raw))
    except ValueError:
        raise UserError(f"{RENDEZVOUS_TIMEOUT_ENV}={raw} is not a number of seconds") from None


@contextlib.contextmanager
def rendezvous_errors():
    """Context: a failure to reach the other processes becomes one :class:`UserError` line.

    torch raises ``DistNetworkError`` (the main process's port cannot be reached)
    or ``DistStoreError`` (not every process arrived in time).
    """
    try:
        yield
    except (dist.DistError, TimeoutError) as error:
        raise UserError(rendezvous_message(error)) from None


def rendezvous_message(error: BaseException, env: Mapping[str, str] = os.environ) -> str:
    """The one line for a failed rendezvous: where this process looked for the main process, for how long, what to check."""
    address, port = env.get("MASTER_ADDR", "?"), env.get("MASTER_PORT", "?")
    timeout = rendezvous_timeout()
    waited = f"{timeout.total_seconds():g} s" if timeout else "the default timeout"
    rank, world = env.get("RANK", "?"), env.get("WORLD_SIZE", "?")
    return (
        f"process {rank} of {world} could not reach the main process at {address}:{port} within {waited} "
        f"({first_line(error)}); check --main_process_ip, that TCP port {port} is open between the machines, "
        f"that every node was started, and NCCL_SOCKET_IFNAME / GLOO_SOCKET_IFNAME"
    )


def check_same_config(values: Mapping) -> None:
    """Fail on every process when processes were given different configs; the line names the differing keys.

    Each process hashes every (dotted) key's value; the hashes are gathered once.
    Call on every process after :func:`start_processes`.

    Example::

        check_same_config(to_dict(cfg))   # UserError: "... train.lr differ between process 0 and process(es) 1; ..."
    """
    mine = {key: _digest(value) for key, value in _flatten(values).items()}
    everyone = gather_objects(mine)
    first = everyone[0]
    differing = sorted({key for other in everyone for key in set(other) | set(first) if other.get(key) != first.get(key)})
    if differing:
        ranks = [rank for rank, other in enumerate(everyone) if other != first]
        shown = ", ".join(differing[:8]) + (f" and {len(differing) - 8} more" if len(differing) > 8 else "")
        raise UserError(
            f"the processes were started with different configs: {shown} differ between process 0 and process(es) "
            f"{', '.join(map(str, ranks))}; start every node with the same config file and overrides"
        )


def announce_output_sharing(state: PartialState, output_dir: str | Path) -> bool:
    """On several nodes, say once (main process) when ``output_dir`` is not one shared folder; returns whether it is.

    Call on every process. Checkpoints then stay complete on each node
    (:func:`nlpssl.checkpoints.save_checkpoint`).
    """
    if state.num_processes == 1:
        return True
    shared = all(gather_objects(sees_main_process_files(state, Path(output_dir) / "checkpoints")))
    if not shared and state.is_main_process:
        print("nlpssl: output_dir is not shared between nodes; each node keeps its own checkpoints", flush=True)
    return shared


def send_folder(state: PartialState, folder: str | Path) -> None:
    """Copy the files of a small ``folder`` the main process wrote to every node that cannot see them.

    Call on every process once the main process has written it. A trained
    tokenizer, say: every node must use the very same vocabulary.
    """
    if state.num_processes == 1:
        return
    folder = Path(folder)
    sees = sees_main_process_files(state, folder.parent)
    payload = [{p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} if state.is_main_process else None]
    dist.broadcast_object_list(payload, src=0)
    if state.is_local_main_process and not sees:
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in payload[0].items():
            (folder / name).write_bytes(data)
    state.wait_for_everyone()


def _flatten(values: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _digest(value: object) -> str:
    return hashlib.sha1(repr(value).encode()).hexdigest()[:12]


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None
