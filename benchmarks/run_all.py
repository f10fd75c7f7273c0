"""Run every benchmark alone, one after another, and record each JSON line in benchmarks/results.json.

    python benchmarks/run_all.py                                      # every benchmark: hours on a 2-core CPU
    python benchmarks/run_all.py --only mlm_throughput,finetune_sst2  # rerun some, merged into results.json
    python benchmarks/run_all.py --missing                            # only those without a full, current entry yet
    python benchmarks/run_all.py --quick                              # smoke run of all: results-quick.json
    python benchmarks/run_all.py --list                               # the table: names and commands

Each benchmark is a subprocess (``python benchmarks/<name>.py ARGS``) started
from the repository root with nothing else of ours running beside it; its
output streams to this terminal, and its last stdout line (one JSON object) is
recorded with the command, the wall time, the commit and the machine (CPU
model, cores, torch and transformers versions). A benchmark whose file is
missing or that fails is recorded as such and the run goes on. Each entry is
merged into the results file as its benchmark ends: an interrupted run keeps
what it measured, and ``--only`` replaces just the entries it reruns. Writing ``benchmarks/results.json`` also rewrites the README's
benchmark table from it (``render_table.py``).

To add a benchmark: a script that prints one JSON object as its last line, a
row in ``BENCHMARKS`` below, and a renderer in ``renderers.py`` (until then
``renderers.generic`` shows its numbers).
"""

from __future__ import annotations

import argparse
import collections
import datetime
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import renderers  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results.json"
QUICK_RESULTS = REPO / "benchmarks" / "results-quick.json"
TAIL_LINES = 30


@dataclass(frozen=True)
class Benchmark:
    """One row of the table: ``benchmarks/<name>.py`` (or ``<runs>.py``) with its full-run and smoke-run arguments, and its renderer."""

    name: str
    args: tuple[str, ...] = ()
    quick_args: tuple[str, ...] = ("--quick",)
    render: Callable[[dict], list[tuple[str, str]]] = field(default=renderers.generic, compare=False)
    runs: str | None = None  # the script's name when this row runs another row's script with other arguments
    #: a markdown table of the result's details, written into the README between ``<!-- results:NAME:start/end -->``
    detail: Callable[[dict], str] | None = field(default=None, compare=False)

    @property
    def script(self) -> str:
        return f"benchmarks/{self.runs or self.name}.py"

    def command(self, quick: bool) -> list[str]:
        """The command as the README shows it (``python``, relative path)."""
        return ["python", self.script, *(self.quick_args if quick else self.args)]


#: every benchmark, in the order run_all runs them (pretraining_pays before simcse_quality: it reuses the MLM model)
BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark("mlm_throughput", render=renderers.mlm_throughput),
    Benchmark("clm_throughput", quick_args=("--rounds", "1", "--steps", "1", "--warmup", "1"), render=renderers.clm_throughput),
    Benchmark("simcse_throughput", render=renderers.simcse_throughput),
    Benchmark("simcse_grouping", render=renderers.simcse_grouping),
    Benchmark("simcse_general", render=renderers.simcse_general),
    Benchmark("finetune_sst2", render=renderers.finetune_sst2),
    Benchmark("pretraining_pays", render=renderers.pretraining_pays),
    Benchmark("simcse_quality", render=renderers.simcse_quality),
    Benchmark("mlm_budget", render=renderers.mlm_budget, detail=renderers.mlm_budget_study),
    Benchmark("mlm_budget_clm", runs="mlm_budget", args=("--clm", "--variants", "base,combined_clm"), quick_args=("--quick", "--clm"),
              render=renderers.mlm_budget, detail=renderers.mlm_budget_study),
    Benchmark("kill_resume", quick_args=("--kills", "3", "--steps", "12"), render=renderers.kill_resume),
    Benchmark("vision_throughput", quick_args=("--rounds", "1", "--steps", "1", "--batch-size", "32"), render=renderers.vision_throughput),
    Benchmark("vision_knn", args=("--steps", "400", "--train-images", "10000"), render=renderers.vision_knn),
    Benchmark("vision_knn_simclr", runs="vision_knn", args=("--methods", "simclr", "--steps", "400", "--train-images", "10000", "--seeds", "0", "1", "2"),
              quick_args=("--quick", "--methods", "simclr"), render=renderers.vision_knn),
    Benchmark("vision_variants", render=renderers.vision_variants),
)

#: benchmark scripts this runner leaves out, and why
NOT_RUN_HERE = {"gpu_check": "needs a CUDA GPU; benchmarks/gpu_check.sh runs it on a lent machine"}


#: the libraries whose versions can move a figure
PACKAGES = ("torch", "torchvision", "kornia", "transformers", "sentence-transformers", "accelerate", "lightly")


def machine() -> dict:
    """The CPU model, cores, Python and the versions of the libraries the figures depend on."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_model(), "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(), "platform": platform.platform(), **versions,
    }


def cpu_model() -> str:
    """``model name`` from /proc/cpuinfo, else what ``platform`` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


#: tracked files whose changes cannot move a figure: the results this runner writes, and prose
NOT_CODE = (":!benchmarks/results.json", ":!benchmarks/results-quick.json", ":!*.md")


def commit(repo: Path = REPO) -> dict:
    """HEAD's hash, and whether tracked code differs from it (the figures then come from uncommitted code).

    The results files and Markdown are left out: this runner rewrites them between benchmarks.
    """

    def git(*args: str) -> str | None:
        done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    changes = git("status", "--porcelain", "--untracked-files=no", "--", ".", *NOT_CODE)
    return {"commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(changes) if changes is not None else None}


def stream(command: list[str], cwd: Path) -> tuple[int, list[str], list[str]]:
    """Run ``command``, echoing its stdout and stderr as they come; (exit status, last stdout lines, last stderr lines)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_EVALUATE_OFFLINE"):
        env.setdefault(key, "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    process = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    stdout_tail, stderr_tail = collections.deque(maxlen=TAIL_LINES), collections.deque(maxlen=TAIL_LINES)

    def echo(pipe, tail, out) -> None:
        for line in pipe:
            out.write(line)
            out.flush()
            tail.append(line.rstrip("\n"))

    errors = threading.Thread(target=echo, args=(process.stderr, stderr_tail, sys.stderr), daemon=True)
    errors.start()
    echo(process.stdout, stdout_tail, sys.stdout)
    errors.join()
    return process.wait(), list(stdout_tail), list(stderr_tail)


def last_json_object(lines: list[str]) -> dict | None:
    """The JSON object on the last non-empty line, or None when that line is not one."""
    for line in reversed(lines):
        if line.strip():
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                return None
            return value if isinstance(value, dict) else None
    return None


def run_benchmark(benchmark: Benchmark, quick: bool, repo: Path = REPO) -> dict:
    """Run one benchmark; its results entry (status ok, failed or missing)."""
    command = benchmark.command(quick)
    entry = {"command": " ".join(command), "quick": quick, **commit(repo), "machine": machine(),
             "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if not (repo / benchmark.script).is_file():
        print(f"== {benchmark.name}: {benchmark.script} not found; skipped", flush=True)
        return entry | {"status": "missing"}
    print(f"== {benchmark.name}: {entry['command']}", flush=True)
    started = time.perf_counter()
    returncode, stdout_tail, stderr_tail = stream([sys.executable, *command[1:]], repo)
    entry |= {"wall_s": round(time.perf_counter() - started, 1),
              "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    result = last_json_object(stdout_tail)
    if returncode != 0 or result is None:
        why = f"exit status {returncode}" if returncode != 0 else "the last stdout line is not a JSON object"
        print(f"== {benchmark.name}: failed ({why}) after {entry['wall_s']:.0f} s", flush=True)
        return entry | {"status": "failed", "error": why, "stdout_tail": stdout_tail[-10:], "stderr_tail": stderr_tail}
    print(f"== {benchmark.name}: done in {entry['wall_s']:.0f} s", flush=True)
    return entry | {"status": "ok", "result": result}


def load_results(path: Path) -> dict | None:
    """The results file's contents, or None when there is none yet."""
    return json.loads(path.read_text()) if path.is_file() else None


def merged(previous: dict | None, entries: dict[str, dict], table=BENCHMARKS, repo: Path = REPO) -> dict:
    """``previous`` results with ``entries`` replacing theirs; benchmarks in table order, then any others."""
    benchmarks = dict((previous or {}).get("benchmarks", {})) | entries
    order = [b.name for b in table if b.name in benchmarks] + [name for name in benchmarks if name not in {b.name for b in table}]
    ordered = {name: benchmarks[name] for name in order}
    return {
        "quick": any(entry.get("quick") for entry in ordered.values()),
        **commit(repo), "machine": machine(),
        "updated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "benchmarks": ordered,
    }


def still_to_run(results: dict | None, table=BENCHMARKS) -> list[str]:
    """Benchmarks whose entry is absent, a smoke run, failed, or made by another command than today's full one.

    ``--missing`` runs just these, so a full run can be spread over several sittings.
    """
    entries = (results or {}).get("benchmarks", {})

    def current(benchmark: Benchmark) -> bool:
        entry = entries.get(benchmark.name, {})
        return entry.get("status") == "ok" and not entry.get("quick") and entry.get("command") == " ".join(benchmark.command(False))

    return [benchmark.name for benchmark in table if not current(benchmark)]


def kept_if_failed(before: dict | None, attempt: dict) -> dict:
    """The attempt's entry, unless it failed where the entry before it had succeeded.

    Then the earlier measurement stays (with its own command and commit), and the
    failed attempt is kept beside it under ``last_attempt``: a rerun that breaks
    never erases a figure, and the table says the rerun failed.
    """
    if attempt["status"] == "ok" or not before or before.get("status") != "ok":
        return attempt
    print(f"== keeping the earlier result of {attempt['command']!r} (commit {before.get('commit')})", flush=True)
    return {key: value for key, value in before.items() if key != "last_attempt"} | {"last_attempt": attempt}


def run(names: list[str], quick: bool, results_path: Path, table=BENCHMARKS, repo: Path = REPO) -> dict:
    """Run the named benchmarks of ``table`` in order, merging each entry into ``results_path`` as it ends; the results.

    Entries of benchmarks not run this time stay as they were (each says its
    own commit, machine and whether it was a smoke run); a failed rerun keeps the
    earlier result (:func:`kept_if_failed`).
    """
    previous = load_results(results_path)
    entries: dict[str, dict] = {}
    results = previous or merged(None, {}, table, repo)
    for benchmark in (b for b in table if b.name in names):
        before = (previous or {}).get("benchmarks", {}).get(benchmark.name)
        entries[benchmark.name] = kept_if_failed(before, run_benchmark(benchmark, quick, repo))
        results = merged(previous, entries, table, repo)
        results_path.write_text(json.dumps(results, indent=1) + "\n")
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated benchmark names (default: all)")
    parser.add_argument("--quick", action="store_true", help="each benchmark's smoke-run arguments (default file: results-quick.json)")
    parser.add_argument("--results", type=Path, help=f"results file (default {RESULTS.relative_to(REPO)})")
    parser.add_argument("--missing", action="store_true", help="only benchmarks without a full entry made by today's command")
    parser.add_argument("--list", action="store_true", help="print the table and exit")
    args = parser.parse_args(argv)
    known = [b.name for b in BENCHMARKS]
    args.names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else known
    if args.missing and (args.quick or args.only):
        parser.error("--missing picks the benchmarks itself: give it without --only and --quick")
    unknown = [name for name in args.names if name not in known]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    args.results = args.results or (QUICK_RESULTS if args.quick else RESULTS)
    if args.missing:
        args.names = still_to_run(load_results(args.results))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.list:
        for benchmark in BENCHMARKS:
            print(f"{benchmark.name:<20} {' '.join(benchmark.command(args.quick))}")
        return
    started = time.perf_counter()
    results = run(args.names, args.quick, args.results)
    statuses = collections.Counter(results["benchmarks"][name]["status"] for name in args.names)
    print(f"run_all: {dict(statuses)} in {time.perf_counter() - started:.0f} s; results in {args.results}")
    if args.results.resolve() == RESULTS.resolve():
        from render_table import write_readme

        write_readme()
        print("run_all: README.md's benchmark table rewritten from it")


if __name__ == "__main__":
    main()
