"""A ledger of finished runs, so a benchmark of many long runs that is stopped part-way goes on where it stopped.

``vision_knn.py`` trains up to ten models for two hours on a 2-core CPU; a
session that ends, or a kill, used to lose every run already done. Each
finished (name, seed) run is appended to ``runs.jsonl`` in the benchmark's
output folder with a fingerprint of everything its figure depends on: the
code (every ``.py`` under ``nlpssl/`` and ``benchmarks/``, every config), the
benchmark's arguments, the library versions and the machine. A later start
with the same fingerprint reads those runs back instead of training them again;
anything else (a changed file, another argument, another CPU) trains afresh.

Example::

    ledger = RunLedger(args.out / "runs.jsonl", fingerprint(vars(args)))
    run = ledger.get("simclr", 0) or ledger.record("simclr", 0, train_and_score())
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: what a figure of these benchmarks depends on, besides their arguments
CODE_GLOBS = ("nlpssl/**/*.py", "benchmarks/*.py", "configs/**/*.yaml")
PACKAGES = ("torch", "torchvision", "kornia", "transformers", "accelerate", "lightly")


def fingerprint(arguments: dict, repo: Path = REPO) -> str:
    """A hash of the code, ``arguments`` (JSON-able values), library versions and CPU: equal means the same run."""
    digest = hashlib.sha256()
    for pattern in CODE_GLOBS:
        for path in sorted(repo.glob(pattern)):
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps(arguments, sort_keys=True, default=str).encode())
    digest.update(json.dumps({name: _version(name) for name in PACKAGES}).encode())
    digest.update(f"{platform.processor()}|{_cpu_model()}|{len(os.sched_getaffinity(0))}".encode())
    return digest.hexdigest()[:16]


class RunLedger:
    """Finished runs of one benchmark, kept in a JSON-lines file: ``{name, seed, fingerprint, run}`` per line."""

    def __init__(self, path: Path, run_fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = run_fingerprint
        self.reused: list[str] = []

    def get(self, name: str, seed: int) -> list | None:
        """The recorded ``run`` of (name, seed) under this fingerprint, or None (then train it)."""
        for entry in self._entries():
            if (entry["name"], entry["seed"], entry["fingerprint"]) == (name, seed, self.fingerprint):
                self.reused.append(f"{name}:{seed}")
                return entry["run"]
        return None

    def record(self, name: str, seed: int, run):
        """Append (name, seed)'s ``run`` (JSON-able) to the ledger, flushed and fsynced; returns ``run``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"name": name, "seed": seed, "fingerprint": self.fingerprint, "run": list(run)})
        cut_short = self.path.is_file() and not self.path.read_bytes().endswith(b"\n")  # a kill mid-line
        with open(self.path, "a") as ledger:
            ledger.write(("\n" if cut_short else "") + line + "\n")
            ledger.flush()
            os.fsync(ledger.fileno())
        return run

    def _entries(self) -> list[dict]:
        if not self.path.is_file():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill: that run trains again
                continue
        return entries


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()
