"""nlpssl's cache folder and the crash-safe way files are written into it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from nlpssl.atomic import atomic_file


def cache_dir() -> Path:
    """Where nlpssl keeps generated files (``$NLPSSL_CACHE`` or ``~/.cache/nlpssl``)."""
    root = os.environ.get("NLPSSL_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "nlpssl"
    return Path(root)


def write_lines(path: Path, lines: Iterable[str]) -> Path:
    """Write ``lines`` (each ended by a newline) to ``path`` with :func:`nlpssl.atomic.atomic_file`.

    A crash mid-write leaves no file that looks complete, so "the file exists"
    can mean "the cache is ready"; processes that fill the same cache entry at
    once each rename a whole file of their own into place.

    Example::

        write_lines(cache_dir() / "corpora" / "x.jsonl", (json.dumps(row) for row in rows))
    """
    with atomic_file(path, "w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(line + "\n")
    return path
