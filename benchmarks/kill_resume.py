"""Kill -9 at any instant: a tiny MLM run SIGKILLed again and again, resumed each time, ends as if never killed.

    python benchmarks/kill_resume.py                          # 20 kills of a 132-step run (some minutes on 2 CPU cores)
    python benchmarks/kill_resume.py --kills 3                # smoke run

``scripts/pretrain_mlm.py`` (hidden 32, one layer, blocks of 32 tokens, batch 4,
a checkpoint every ``--save-every`` steps, every step logged) runs once
uninterrupted, then again in another folder as a series of processes: each is
started with ``--train.resume=auto`` and sent SIGKILL at a seeded random moment
of one of four kinds:

* ``startup``: any time before training (imports, data, loading the checkpoint);
* ``training``: a random instant in a step after a random number of steps;
* ``checkpoint_write``: while a ``step_N.tmp`` folder this process created exists;
* ``after_checkpoint``: as soon as a new ``step_N`` appears (renamed, old ones being pruned).

After each kill every folder that resume could take must load (each file read
in full: safetensors tensors, the zip archives torch.save writes, JSON); a
process that exits by itself before the run is done is a failure. The last
process runs to the end. Then every logged record (losses, learning rates,
evaluation results; not the timings) and the final weights must equal the
uninterrupted run's, bit for bit.

Reports kills survived, the steps done twice (logged before a kill, after the
checkpoint resumed from), and the bytes written (``wchar`` of /proc/PID/io: every
write call, checkpoints included) by the uninterrupted run and by all the killed
ones together; a one-step warm-up run fills the datasets cache first, so neither
side pays for it. Prints one JSON object as its last line.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, print_result  # noqa: E402,I001

from nlpssl.checkpoints import STATE_FILE, complete_checkpoints  # noqa: E402
from nlpssl.errors import first_line  # noqa: E402

KINDS = ("startup", "training", "checkpoint_write", "after_checkpoint")
TIMINGS = {"tokens_per_s"}  # logged keys that differ between identical runs
POLL_S = 0.002
ENV = os.environ | {
    "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
}
#: the files a complete checkpoint of a one-process run holds
REQUIRED = (STATE_FILE, "model.safetensors", "optimizer.bin", "random_states_0.pkl", "model/config.json", "model/model.safetensors")


def run_args(steps: int, save_every: int, tokenizer: Path, output_dir: Path) -> list[str]:
    """scripts/pretrain_mlm.py's arguments: tiny dimensions, frequent checkpoints, every step logged."""
    return [
        "--model.hidden_size=32", "--model.num_layers=1", "--model.num_heads=2", "--model.intermediate_size=64",
        "--data.block_size=32", f"--tokenizer.path={tokenizer}", "--train.batch_size=4", f"--train.max_steps={steps}",
        f"--train.save_every={save_every}", "--train.log_every=1", f"--train.eval_every={max(save_every * 3, 1)}",
        "--train.eval_batches=2", "--train.warmup_steps=5", "--train.keep_checkpoints=2", "--train.cpu_threads=1",
        f"--train.output_dir={output_dir}", "--train.resume=auto",
    ]


# ---- what a kill may leave: every checkpoint resume could take must load ----


def checkpoint_problems(folder: Path) -> list[str]:
    """Why a complete checkpoint folder would not load: missing files, files that do not read in full ([] if none)."""
    problems = [f"{name}: missing" for name in REQUIRED if not (folder / name).is_file()]
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            _read_fully(path)
        except Exception as error:  # noqa: BLE001 (any failure to read is what this looks for)
            problems.append(f"{path.relative_to(folder)}: {first_line(error)}")
    return problems


def _read_fully(path: Path) -> None:
    """Read every byte that loading would: tensors, zip members (torch.save archives, CRC-checked), JSON."""
    if path.suffix == ".safetensors":
        load_file(path)
    elif path.suffix == ".json":
        json.loads(path.read_text())
    elif path.suffix in (".bin", ".pkl", ".pt"):
        with zipfile.ZipFile(path) as archive:  # torch.save's format; a truncated file has no central directory
            broken = archive.testzip()
        if broken is not None:
            raise ValueError(f"bad CRC in {broken}")


# ---- one process of a run, watched and perhaps killed ----


@dataclass
class Launch:
    """What one process did: how it ended, the bytes it wrote, the steps it had logged."""

    exit_status: int
    killed: bool
    bytes_written: int
    seconds: float
    logged_step: int
    stderr: str = ""
    first_log_s: float | None = None  # seconds until metrics.jsonl appeared (a fresh run's start-up)


@dataclass
class Watch:
    """When to kill: a kind and its parameters (drawn from the seeded generator)."""

    kind: str | None = None  # None: never (run to the end)
    after_s: float = 0.0  # startup: seconds after the start
    step: int = 0  # training: logged step to wait for
    nth: int = 1  # checkpoint_write / after_checkpoint: the n-th checkpoint this process writes
    jitter_s: float = 0.0  # training: a further wait within the step
    seen: set = field(default_factory=set)


def launch(args: list[str], output_dir: Path, watch: Watch) -> Launch:
    """Run scripts/pretrain_mlm.py until it ends, or SIGKILL it when ``watch`` says."""
    started = time.monotonic()
    started_wall = time.time()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "scripts" / "pretrain_mlm.py"), *args],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    stderr_lines: list[str] = []
    reader = _drain(process, stderr_lines)
    written, killed, first_log_s = 0, False, None
    while process.poll() is None:
        written = max(written, _bytes_written(process.pid))
        if first_log_s is None and (output_dir / "metrics.jsonl").is_file():
            first_log_s = time.monotonic() - started
        if watch.kind is not None and _time_to_kill(watch, output_dir, started, started_wall):
            written = max(written, _bytes_written(process.pid))
            process.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(POLL_S)
    process.wait()
    reader.join()
    seconds = time.monotonic() - started
    return Launch(process.returncode, killed, written, seconds, _last_logged_step(output_dir), "".join(stderr_lines), first_log_s)


def _time_to_kill(watch: Watch, output_dir: Path, started: float, started_wall: float) -> bool:
    if watch.kind == "startup":
        return time.monotonic() - started >= watch.after_s
    if watch.kind == "training":
        if _last_logged_step(output_dir) < watch.step:
            return False
        time.sleep(watch.jitter_s)
        return True
    checkpoints = output_dir / "checkpoints"
    if watch.kind == "checkpoint_write":  # a step_N.tmp this process created (a stale one predates it)
        fresh = {p.name for p in checkpoints.glob("step_*.tmp") if _created_since(p, started_wall)}
    else:  # after_checkpoint: a step_N this process completed
        fresh = {p.name for p in checkpoints.glob("step_*") if not p.name.endswith(".tmp") and _created_since(p, started_wall)}
    watch.seen |= fresh
    return len(watch.seen) >= watch.nth and bool(fresh)


def _created_since(path: Path, since: float) -> bool:
    try:
        return path.stat().st_ctime >= since
    except FileNotFoundError:
        return False


def _drain(process: subprocess.Popen, lines: list[str]):
    """Read stderr in a thread (the pipe must not fill while the run waits for us)."""
    import threading

    thread = threading.Thread(target=lambda: lines.extend(process.stderr), daemon=True)
    thread.start()
    return thread


def _bytes_written(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("wchar:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _records(output_dir: Path) -> list[dict]:
    """metrics.jsonl's records without the timings; a line that does not parse is kept as text."""
    path = output_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append({k: v for k, v in json.loads(line).items() if k not in TIMINGS})
        except json.JSONDecodeError:
            records.append({"torn": line})
    return records


def _last_logged_step(output_dir: Path) -> int:
    try:
        return max((r["step"] for r in _records(output_dir) if "loss" in r), default=0)
    except KeyError:
        return 0


def _newest_checkpoint_step(output_dir: Path) -> int:
    found = complete_checkpoints(output_dir)
    return int(found[-1].name.split("_")[1]) if found else 0


# ---- the plan of kills and the comparison ----


def draw_watch(
    rng: random.Random, resume_step: int, steps: int, save_every: int, startup_s: float, step_s: float, kinds=KINDS,
) -> Watch:
    """A seeded kill moment of one of ``kinds`` that comes before the run could finish (else a startup kill)."""
    kind = rng.choice(kinds)
    nth = rng.choice((1, 2))
    next_saves = [s for s in range(resume_step + 1, steps) if s % save_every == 0]
    if kind in ("checkpoint_write", "after_checkpoint") and len(next_saves) >= nth:
        return Watch(kind, nth=nth)
    last_trainable = min(resume_step + 2 * save_every, steps - 1)
    if kind == "training" and last_trainable > resume_step:
        return Watch("training", step=rng.randint(resume_step + 1, last_trainable), jitter_s=rng.uniform(0, step_s))
    return Watch("startup", after_s=rng.uniform(0, startup_s))


def same_weights(a: Path, b: Path) -> bool:
    first, second = load_file(a), load_file(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def train_tokenizer(work: Path) -> Path:
    """One tokenizer for both runs (two trainings could break ties between equal merges differently)."""
    folder = work / "tokenizer"
    command = [sys.executable, str(REPO / "scripts" / "train_tokenizer.py"), "--tokenizer.vocab_size=500", f"--output.dir={folder}"]
    subprocess.run(command, cwd=REPO, env=ENV, check=True, capture_output=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=None,
                        help="run length (default: (kills + 2) x 2 x save_every: no kill can come after the run ended, "
                             "as one killed process advances at most 2 x save_every steps)")
    parser.add_argument("--save-every", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"kill moments to draw from (default: all of {','.join(KINDS)})")
    parser.add_argument("--work", type=Path, default=None, help="a new folder for both runs (default: a temporary one)")
    options = parser.parse_args()
    options.steps = options.steps or (options.kills + 2) * 2 * options.save_every
    if unknown := set(options.kinds.split(",")) - set(KINDS):
        parser.error(f"unknown --kinds {', '.join(sorted(unknown))}; choose from {', '.join(KINDS)}")
    work = options.work or Path(tempfile.mkdtemp(prefix="kill_resume_"))
    work.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(work)

    straight_dir, killed_dir = work / "straight", work / "killed"
    warm_up = launch(run_args(1, options.save_every, tokenizer, work / "warm_up"), work / "warm_up", Watch())  # fills the datasets cache
    if warm_up.exit_status != 0:
        raise SystemExit(f"the warm-up run failed:\n{warm_up.stderr[-3000:]}")
    straight = launch(run_args(options.steps, options.save_every, tokenizer, straight_dir), straight_dir, Watch())
    if straight.exit_status != 0:
        raise SystemExit(f"the uninterrupted run failed:\n{straight.stderr[-3000:]}")
    startup_s = straight.first_log_s or straight.seconds / 2  # imports, data, model: before the first step
    step_s = (straight.seconds - startup_s) / options.steps

    rng = random.Random(options.seed)
    args = run_args(options.steps, options.save_every, tokenizer, killed_dir)
    kinds, failures = {kind: 0 for kind in KINDS}, []
    survived = steps_redone = bytes_killed = 0
    seconds_killed = 0.0
    for kill in range(options.kills):
        resume_step = _newest_checkpoint_step(killed_dir)
        watch = draw_watch(rng, resume_step, options.steps, options.save_every, startup_s, step_s, options.kinds.split(","))
        result = launch(args, killed_dir, watch)
        bytes_killed, seconds_killed = bytes_killed + result.bytes_written, seconds_killed + result.seconds
        if not result.killed:
            failures.append(f"kill {kill + 1} ({watch.kind}): the process ended first with status {result.exit_status}: {result.stderr[-1500:]}")
            break
        kinds[watch.kind] += 1
        broken = {p.name: problems for p in complete_checkpoints(killed_dir) if (problems := checkpoint_problems(p))}
        if broken:
            failures.append(f"kill {kill + 1} ({watch.kind}): checkpoints that would not load: {broken}")
            break
        steps_redone += max(0, result.logged_step - _newest_checkpoint_step(killed_dir))
        survived += 1
    final = launch(args, killed_dir, Watch())
    bytes_killed, seconds_killed = bytes_killed + final.bytes_written, seconds_killed + final.seconds
    if final.exit_status != 0:
        failures.append(f"the last resume failed with status {final.exit_status}: {final.stderr[-1500:]}")

    identical_records = _records(killed_dir) == _records(straight_dir)
    identical_weights = final.exit_status == 0 and same_weights(straight_dir / "final" / "model.safetensors", killed_dir / "final" / "model.safetensors")
    print_result({
        "benchmark": "kill_resume",
        "kills": options.kills, "survived": survived,
        "ok": survived == options.kills and identical_records and identical_weights and not failures,
        "kill_moments": kinds,
        "identical_losses": identical_records, "identical_weights": identical_weights,
        "steps": options.steps, "save_every": options.save_every, "steps_redone": steps_redone,
        "bytes_written": {"uninterrupted": straight.bytes_written, "killed_and_resumed": bytes_killed},
        "seconds": {"uninterrupted": round(straight.seconds, 1), "killed_and_resumed": round(seconds_killed, 1)},
        "failures": failures, "seed": options.seed, "work": str(work),
    })


if __name__ == "__main__":
    main()
