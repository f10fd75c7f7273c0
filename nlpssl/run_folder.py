"""A run's output folder: never start over another run by accident, never continue one with another config.

Checked at start (:func:`check_output_dir`, from :func:`nlpssl.recipes.common.start_run`),
before anything is written:

- a new run (``train.resume`` empty) into a folder that holds another run
  (``config.yaml``, ``metrics.jsonl``, ``checkpoints/`` or ``final/``) is refused
  with one line, unless ``train.overwrite=true``, which first clears that run's
  outputs (:data:`RUN_OUTPUTS`);
- a resume compares the resolved config with the run's ``config.yaml`` key by key
  and refuses, naming the keys, when any differs but those that may change on
  resume (:data:`MAY_CHANGE_ON_RESUME`: how long, how often to log, evaluate
  and save, evaluation settings, workers and threads).

The main process decides and every process gets its answer, so all stop or go on together.
"""

from __future__ import annotations

import shutil
from fnmatch import fnmatch
from pathlib import Path
from typing import Mapping

import yaml

from nlpssl.checkpoints import complete_checkpoints
from nlpssl.config import flat_dict
from nlpssl.distributed import gather_objects
from nlpssl.errors import UserError, first_line

CONFIG_FILE = "config.yaml"
#: what shows that a folder holds a run
RUN_MARKERS = (CONFIG_FILE, "metrics.jsonl", "checkpoints", "final")
#: what ``train.overwrite=true`` clears (files the user put there stay)
RUN_OUTPUTS = (
    *RUN_MARKERS, "best", "best.tmp", "final.tmp", "tokenizer", "tokenizer.tmp", "metrics.json",
    "curves.png", "confusion_matrix.png", "reconstructions.png", "predictions_*.csv",
)
#: config keys (``section.key``, with wildcards) that a resume may change: they do not change what is trained
MAY_CHANGE_ON_RESUME = (
    "train.output_dir", "train.max_steps", "train.log_every", "train.eval_every", "train.save_every",
    "train.keep_checkpoints", "train.eval_batches", "train.resume", "train.overwrite", "train.report_to",
    "train.num_workers", "train.cpu_threads", "train.max_bad_steps", "train.compile", "train.gradient_checkpointing",
    "data.num_proc", "eval.*", "sample.*", "simcse.stsb_dir",
)


def check_output_dir(state, config: Mapping) -> None:
    """Refuse a run that would clobber or wrongly continue another; clear the old run under ``train.overwrite``.

    ``state``: the run's ``PartialState`` (call on every process); ``config``:
    the resolved recipe config as nested dicts (:func:`nlpssl.config.to_dict`).

    Example::

        check_output_dir(state, to_dict(cfg))   # UserError: "train.output_dir=outputs/mlm already holds a run ..."
    """
    train = config["train"]
    output_dir, resume, overwrite = Path(train["output_dir"]), train.get("resume") or "", bool(train.get("overwrite"))
    problem = output_dir_problem(output_dir, resume, overwrite, config) if state.is_main_process else None
    problem = gather_objects(problem)[0]
    if problem:
        raise UserError(problem)
    if overwrite:
        _clear_on_every_node(state, output_dir)


def output_dir_problem(output_dir: Path, resume: str, overwrite: bool, config: Mapping) -> str | None:
    """The one line that refuses this start (None: go on), from the folder as it is now."""
    if overwrite and resume:
        return f"train.overwrite=true starts the run over and train.resume={resume} continues it; give only one of them"
    found = run_markers(output_dir)
    if not resume:
        if found and not overwrite:
            return already_holds_a_run(output_dir, found, "--train.resume=auto", "--train.overwrite=true")
        return None
    saved = _saved_config_of(output_dir, resume)
    if saved is None:
        return None
    try:
        before = yaml.safe_load(saved.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return f"cannot read {saved} to compare the config with the run it continues ({first_line(error)}); restore it or start a new run"
    differing = changed_keys(before if isinstance(before, dict) else {}, config)
    if differing:
        shown = ", ".join(differing[:8]) + (f" and {len(differing) - 8} more" if len(differing) > 8 else "")
        return (
            f"train.resume={resume}: the config differs from the run's {saved} in {shown}, which cannot change on "
            f"resume; set them back, or start a new run (another train.output_dir, or --train.overwrite=true)"
        )
    return None


def check_fresh_start(state, output_dir: Path) -> None:
    """Refuse to start a run at step 0 (no resume, no overwrite) where another run left its records.

    ``state``: the run's ``Accelerator`` or ``PartialState`` (call on every
    process; the main process looks, every process raises). The scripts refuse
    such a folder through :func:`check_output_dir` before they write its
    ``config.yaml``; this guards :func:`nlpssl.train.train` called from Python,
    which would otherwise drop that run's ``metrics.jsonl`` and replace its
    checkpoints and ``final/``.
    """
    found = [name for name in run_markers(output_dir) if name != CONFIG_FILE] if state.is_main_process else []
    found = gather_objects(found)[0]
    if found:
        raise UserError(already_holds_a_run(output_dir, found, "train.resume='auto'", "train.overwrite=True"))


def already_holds_a_run(output_dir: Path, found: list[str], resume: str, overwrite: str) -> str:
    """The refusal of a new run in ``output_dir``, which holds ``found``; ``resume`` / ``overwrite``: the options as the caller spells them."""
    return (
        f"train.output_dir={output_dir} already holds a run ({', '.join(found)}); continue it with "
        f"{resume}, start it over with {overwrite}, or choose a new train.output_dir"
    )


def run_markers(output_dir: Path) -> list[str]:
    """The names in ``output_dir`` that show it holds a run (``checkpoints`` only when it holds any)."""
    found = []
    for name in RUN_MARKERS:
        path = Path(output_dir) / name
        if name == "checkpoints" and not (path.is_dir() and any(path.glob("step_*"))):
            continue
        if path.exists():
            found.append(f"{name}/" if path.is_dir() else name)
    return found


def changed_keys(saved: Mapping, current: Mapping) -> list[str]:
    """``section.key`` names whose values differ between two configs, but those in :data:`MAY_CHANGE_ON_RESUME`.

    Both go through the same yaml round trip, so ``5e-4`` and ``0.0005`` are equal; keys only one of them has
    (a newer version of nlpssl added them) are not compared.
    """
    before = flat_dict(saved)
    after = flat_dict(yaml.safe_load(yaml.safe_dump(dict(current), sort_keys=False)))
    return sorted(
        key for key in set(before) & set(after)
        if before[key] != after[key] and not any(fnmatch(key, pattern) for pattern in MAY_CHANGE_ON_RESUME)
    )


def clear_run(output_dir: Path) -> list[str]:
    """Remove the outputs of the run in ``output_dir`` (:data:`RUN_OUTPUTS`); returns the names removed."""
    removed = []
    for pattern in RUN_OUTPUTS:
        for path in sorted(Path(output_dir).glob(pattern)):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(path.name)
    return removed


def _saved_config_of(output_dir: Path, resume: str) -> Path | None:
    """The ``config.yaml`` of the run a resume continues; None when there is nothing to compare with.

    ``auto`` without a complete checkpoint starts from step 0: nothing is continued.
    """
    if resume == "auto":
        return output_dir / CONFIG_FILE if complete_checkpoints(output_dir) and (output_dir / CONFIG_FILE).is_file() else None
    run_of_checkpoint = Path(resume).resolve().parent.parent / CONFIG_FILE  # RUN/checkpoints/step_N
    for candidate in (run_of_checkpoint, output_dir / CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return None


def _clear_on_every_node(state, output_dir: Path) -> None:
    """The main process clears the old run; then the local main process of a node that does not share its files."""
    if state.is_main_process:
        removed = clear_run(output_dir)
        if removed:
            print(f"nlpssl: train.overwrite=true: removed {', '.join(removed)} from {output_dir}", flush=True)
    state.wait_for_everyone()
    if not state.is_main_process and state.is_local_main_process:
        clear_run(output_dir)
    state.wait_for_everyone()
