"""A ledger of finished runs, so a benchmark of many long runs that is stopped part-way goes on where it stopped.

``vision_knn.py`` trains up to ten models for two hours on a 2-core CPU; a
session that ends, or a kill, used to lose every run already done. Each
finished (name, seed) run is appended to ``runs.jsonl`` in the benchmark's
output folder with a fingerprint of everything its figure depends on: the
code (every ``.py`` under ``nlpssl/``, every config and the benchmark's own
scripts), its arguments, the library versions and the machine. A later start
with the same fingerprint reads those runs back instead of training them again;
anything else (a changed file, another argument, another CPU) trains afresh.

Example::

    ledger = RunLedger(args.out / "runs.jsonl", fingerprint(vars(args), ["vision_knn.py", "common.py"]))
    run = ledger.run("simclr", 0, train_and_score)   # read back, or trained now and recorded
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

from run_all import machine

REPO = Path(__file__).resolve().parents[1]
#: what a figure of these benchmarks depends on, besides their own scripts and arguments
CODE_GLOBS = ("nlpssl/**/*.py", "configs/**/*.yaml", "scripts/**/*.py")


def fingerprint(arguments: dict, scripts: Sequence[str], repo: Path = REPO) -> str:
    """A hash of the code, ``arguments`` (JSON-able values), library versions, Python and CPU: equal means the same run.

    The code is the package, the configs, the user scripts and ``scripts``: the files under
    ``benchmarks/`` whose code computes the figures (not the runner, the table's
    renderers or unrelated benchmarks, which cannot move them).
    """
    digest = hashlib.sha256()
    paths = [path for pattern in CODE_GLOBS for path in sorted(repo.glob(pattern))]
    for path in [*paths, *(repo / "benchmarks" / script for script in sorted(scripts))]:
        digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps(arguments, sort_keys=True, default=str).encode())
    host = {key: value for key, value in machine().items() if key != "platform"}  # not the kernel's version
    digest.update(json.dumps(host, sort_keys=True).encode())
    return digest.hexdigest()[:16]


class RunLedger:
    """Finished runs of one benchmark, kept in a JSON-lines file: ``{name, seed, fingerprint, run}`` per line."""

    def __init__(self, path: Path, run_fingerprint: str) -> None:
        self.path = Path(path)
        self.fingerprint = run_fingerprint
        self.reused: list[str] = []
        self._runs = {(entry["name"], entry["seed"]): entry["run"]
                      for entry in self._entries() if entry["fingerprint"] == run_fingerprint}

    def get(self, name: str, seed: int) -> list | None:
        """The recorded ``run`` of (name, seed) under this fingerprint, or None (then train it)."""
        run = self._runs.get((name, seed))
        if run is not None:
            self.reused.append(f"{name}:{seed}")
        return run

    def run(self, name: str, seed: int, compute: Callable[[], Sequence]) -> list:
        """(name, seed)'s recorded run, or ``compute()``'s, recorded now; ``reused`` says which it was."""
        run = self.get(name, seed)
        return run if run is not None else self.record(name, seed, compute())

    def record(self, name: str, seed: int, run: Sequence) -> list:
        """Append (name, seed)'s ``run`` (JSON-able) to the ledger, flushed and fsynced; returns it as a list."""
        run = list(run)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"name": name, "seed": seed, "fingerprint": self.fingerprint, "run": run})
        cut_short = self.path.is_file() and not self.path.read_bytes().endswith(b"\n")  # a kill mid-line
        with open(self.path, "a") as ledger:
            ledger.write(("\n" if cut_short else "") + line + "\n")
            ledger.flush()
            os.fsync(ledger.fileno())
        self._runs[(name, seed)] = run
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
