"""Crash-safe checkpoints: written to ``step_N.tmp`` and renamed when complete.

A checkpoint folder holds Accelerate's state (model, optimizer, every process's
RNG, the fp16 scaler), ``trainer_state.json`` with the step and the data
position, and ``model/``: the exported model and tokenizer, loadable by other
tools on its own. Only folders without the ``.tmp`` suffix are complete; a
crash mid-write leaves a ``.tmp`` that resume ignores and the next save removes.

On several nodes without a shared filesystem each node keeps its own copy: the
local main process of a node that cannot see the main process's files writes
and completes the node's copy, and ``resume=auto`` takes the newest step that
every process has.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Callable

from accelerate import Accelerator

from nlpssl.atomic import disk_errors, folder_bytes, removed_on_error
from nlpssl.distributed import gather_objects
from nlpssl.errors import UserError
from nlpssl.safe_loading import verify_checkpoint

STATE_FILE = "trainer_state.json"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    """``output_dir/checkpoints/step_000123``."""
    return Path(output_dir) / "checkpoints" / f"step_{step:06d}"


def save_checkpoint(
    accelerator: Accelerator, model, output_dir: Path, step: int, keep: int, tokenizer=None, micro_step: int | None = None,
    describe: Callable[[Path], None] | None = None,
) -> Path:
    """Save the full training state after ``step`` optimizer steps; keep the newest ``keep``.

    Call on every process (each saves its own RNG state). ``micro_step`` is the
    data position (micro-batches read so far; ``step`` x accumulation unless
    fp16 skipped steps). The folder is completed by the main process, and on a
    node that does not share the main process's filesystem by that node's local
    main process. ``model/`` is written from the weights gathered on every
    process (``accelerator.get_state_dict``), so it is whole under FSDP and
    ZeRO-3 too; where only the main process receives them (ZeRO-3), other
    nodes' copies hold the training state without ``model/``. ``describe(folder)``
    adds to ``model/`` once it is written (the loop's model card).

    A full disk or a folder that cannot be written ends the run with one line
    naming the folder and the space needed (:func:`checkpoint_bytes_needed`);
    the partial folder is removed and the previous checkpoints stay as they were.
    """
    final = checkpoint_dir(output_dir, step)
    partial = final.with_name(final.name + ".tmp")
    writer = completes_checkpoints(accelerator, final.parent)
    if writer and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    needed = checkpoint_bytes_needed(output_dir, accelerator.unwrap_model(model)) if writer else None
    with disk_errors(partial, needed, f"checkpoint {final.name}"), removed_on_error(partial if writer else None):
        _save_state(accelerator, partial, on_this_node=writer)
        weights = accelerator.get_state_dict(model)  # on every process: gathered from the shards under FSDP / ZeRO-3
        if writer and weights:  # ZeRO-3 gathers onto the main process only: other nodes' copies skip model/
            accelerator.unwrap_model(model).export(partial / "model", state_dict=weights)
            if tokenizer is not None:
                tokenizer.save_pretrained(partial / "model")
            if describe is not None:
                describe(partial / "model")
            state = {"step": step} | ({"micro_step": micro_step} if micro_step is not None else {})
            (partial / STATE_FILE).write_text(json.dumps(state))
    accelerator.wait_for_everyone()
    if writer:
        if final.exists():
            _delete(final)
        partial.rename(final)
    # Prune only once every node holds the new checkpoint: a crash in between leaves the old one everywhere.
    accelerator.wait_for_everyone()
    if writer:
        _prune(final.parent, keep)
    accelerator.wait_for_everyone()
    return final


def checkpoint_bytes_needed(output_dir: Path, model) -> int:
    """What the next checkpoint will take on disk: the newest complete one's size, else 4 x the parameter bytes.

    (Four: the weights, Adam's two moments and the exported ``model/``.)
    """
    previous = complete_checkpoints(output_dir)
    return folder_bytes(previous[-1]) if previous else 4 * parameter_bytes(model)


def parameter_bytes(model) -> int:
    """Bytes of ``model``'s parameters (their full size also when sharded)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def completes_checkpoints(accelerator: Accelerator, root: Path) -> bool:
    """Whether this process writes and completes checkpoints in its view of ``root``.

    The main process does; so does the local main process of a node that does
    not see a file the main process has just created there (no shared
    filesystem). Call on every process: it holds two barriers.
    """
    if accelerator.num_processes == 1:
        return True
    sees_main = sees_main_process_files(accelerator, root)
    return accelerator.is_main_process or (accelerator.is_local_main_process and not sees_main)


def sees_main_process_files(state, root: Path) -> bool:
    """Whether this process sees a file the main process has just created in ``root`` (a shared filesystem).

    ``state``: an ``Accelerator`` or ``PartialState``. Call on every process: it
    holds two barriers; the main process creates ``root`` if needed.
    """
    if state.num_processes == 1:
        return True
    # A fresh name each time: no node can have a cached answer (NFS caches failed look-ups).
    marker = Path(root) / f".main_process_{gather_objects(uuid.uuid4().hex)[0]}"
    if state.is_main_process:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
    state.wait_for_everyone()
    sees_main = marker.exists()
    state.wait_for_everyone()
    if state.is_main_process:
        marker.unlink()
    return sees_main


def _save_state(accelerator: Accelerator, folder: Path, on_this_node: bool) -> None:
    """``accelerator.save_state``, whose weights and optimizer files this process writes when ``on_this_node``.

    Accelerate writes them on the main process, or with ``save_on_each_node`` on
    every local main process: set per process, only the writers write.
    """
    config = accelerator.project_configuration
    before, config.save_on_each_node = config.save_on_each_node, on_this_node
    try:
        accelerator.save_state(str(folder))
    finally:
        config.save_on_each_node = before


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders under ``output_dir``, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_FILE).is_file()]
    return sorted(found, key=_step_of)


def find_resume_point(output_dir: Path, resume: str) -> Path | None:
    """Resolve ``train.resume``: "" (fresh), "auto" (newest complete checkpoint, if any) or a folder.

    With several processes "auto" is the newest step complete for every process
    (nodes without a shared filesystem may differ), so all resume together.
    """
    if not resume:
        return None
    if resume == "auto":
        step = newest_common_step(gather_objects([_step_of(p) for p in complete_checkpoints(output_dir)]))
        return checkpoint_dir(output_dir, step) if step is not None else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"train.resume={resume} is not a complete checkpoint folder (no {STATE_FILE}); use auto or a step_N folder")
    return path


def newest_common_step(steps_per_process: list[list[int]]) -> int | None:
    """The newest step every process has a complete checkpoint of; None when none has any.

    Example::

        newest_common_step([[4, 6], [2, 4]])   # 4
    """
    common = set.intersection(*(set(steps) for steps in steps_per_process))
    if common:
        return max(common)
    if any(steps_per_process):
        seen = "; ".join(f"process {rank}: {steps or 'none'}" for rank, steps in enumerate(steps_per_process))
        raise UserError(
            f"train.resume=auto: no checkpoint step is complete for every process ({seen}); "
            f"copy one checkpoints/step_N folder to every node's output_dir or start a new output_dir"
        )
    return None


def load_checkpoint(accelerator: Accelerator, path: Path) -> dict:
    """Restore model, optimizer and RNG from ``path``; returns its trainer state (``step``; ``micro_step`` if saved).

    Its pickles are checked first (:func:`~nlpssl.safe_loading.verify_checkpoint`): one
    that would run code or is damaged ends the run with one line naming the file.
    """
    verify_checkpoint(path)
    accelerator.load_state(str(path))
    return json.loads((Path(path) / STATE_FILE).read_text())


def _step_of(folder: Path) -> int:
    return int(folder.name.split("_")[1])


def _prune(root: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints, and what killed runs left: partial folders, half-deleted ones."""
    for leftover in [*root.glob(f"{_DELETING}*"), *root.glob("step_*.tmp")]:  # no process is writing: after a barrier
        shutil.rmtree(leftover, ignore_errors=True)
    if keep < 1:
        return
    for old in complete_checkpoints(root.parent)[:-keep]:
        _delete(old)


_DELETING = ".deleting_"  # a checkpoint being deleted: not a step_* name, so never taken for a checkpoint


def _delete(folder: Path) -> None:
    """Remove a checkpoint folder; renamed out of sight first, so a kill mid-delete never leaves a step_N missing files."""
    doomed = folder.with_name(_DELETING + folder.name)
    shutil.rmtree(doomed, ignore_errors=True)
    folder.rename(doomed)
    shutil.rmtree(doomed)
