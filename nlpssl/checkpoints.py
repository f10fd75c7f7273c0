"""Crash-safe checkpoints: written to ``step_N.tmp`` and renamed when complete.

A checkpoint folder holds Accelerate's state (model, optimizer, every process's
RNG, the fp16 scaler), ``trainer_state.json`` with the step, and ``model/``: the
exported model and tokenizer, loadable by other tools on its own. Only folders
without the ``.tmp`` suffix are complete; a crash mid-write leaves a ``.tmp``
that resume ignores and the next save removes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from accelerate import Accelerator

from nlpssl.errors import UserError

STATE_FILE = "trainer_state.json"


def checkpoint_dir(output_dir: Path, step: int) -> Path:
    """``output_dir/checkpoints/step_000123``."""
    return Path(output_dir) / "checkpoints" / f"step_{step:06d}"


def save_checkpoint(accelerator: Accelerator, model, output_dir: Path, step: int, keep: int, tokenizer=None) -> Path:
    """Save the full training state after ``step`` optimizer steps; keep the newest ``keep``.

    Call on every process (each saves its own RNG state).
    """
    final = checkpoint_dir(output_dir, step)
    partial = final.with_name(final.name + ".tmp")
    if accelerator.is_main_process and partial.exists():
        shutil.rmtree(partial)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).export(partial / "model")
        if tokenizer is not None:
            tokenizer.save_pretrained(partial / "model")
        (partial / STATE_FILE).write_text(json.dumps({"step": step}))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if final.exists():
            shutil.rmtree(final)
        partial.rename(final)
        _prune(final.parent, keep)
    accelerator.wait_for_everyone()
    return final


def complete_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoint folders under ``output_dir``, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith(".tmp") and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def find_resume_point(output_dir: Path, resume: str) -> Path | None:
    """Resolve ``train.resume``: "" (fresh), "auto" (newest complete checkpoint, if any) or a folder."""
    if not resume:
        return None
    if resume == "auto":
        found = complete_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UserError(f"train.resume={resume} is not a complete checkpoint folder (no {STATE_FILE}); use auto or a step_N folder")
    return path


def load_checkpoint(accelerator: Accelerator, path: Path) -> int:
    """Restore model, optimizer and RNG from ``path``; returns the step it was saved at."""
    accelerator.load_state(str(path))
    return int(json.loads((Path(path) / STATE_FILE).read_text())["step"])


def _prune(root: Path, keep: int) -> None:
    if keep < 1:
        return
    for old in complete_checkpoints(root.parent)[:-keep]:
        shutil.rmtree(old)
