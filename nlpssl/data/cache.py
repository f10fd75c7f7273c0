"""nlpssl's cache folder and the crash-safe way files are written into it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable


def cache_dir() -> Path:
    """Where nlpssl keeps generated files (``$NLPSSL_CACHE`` or ``~/.cache/nlpssl``)."""
    root = os.environ.get("NLPSSL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nlpssl"
    return Path(root)


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    """Write ``lines`` (each ended by a newline) to ``path`` through a ``.partial`` file renamed when complete.

    A crash mid-write leaves no file that looks complete, so "the file exists"
    can mean "the cache is ready". The partial file's name is this writer's own
    (process id and a random part): processes that fill the same cache at once
    each rename a whole file into place instead of writing into one another's.

    Example::

        write_lines(cache_dir() / "corpora" / "x.jsonl", (json.dumps(row) for row in rows))
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        with partial.open("w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line + "\n")
        partial.replace(path)
    except BaseException:
        partial.unlink(missing_ok=True)  # an error (not a kill) leaves nothing behind
        raise
    return path
