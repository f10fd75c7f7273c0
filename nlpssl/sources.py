"""Local path or Hugging Face Hub name: the one rule every loader uses to decide.

Models, tokenizers, corpora and labelled files are all named by one string that
is either something on disk or a Hub repository id. :func:`local_path` decides,
so ``--model.checkpoint``, ``--tokenizer.path``, ``--data.corpus`` and
``--data.train`` read a string the same way.
"""

from __future__ import annotations

from pathlib import Path

_PATH_PREFIXES = (".", "/", "~")


def local_path(source: str | Path, suffix_means_file: bool = False) -> Path | None:
    """The path ``source`` names on disk (``~`` expanded), or None when it is a Hub name.

    A source is local when it exists, or when it is written as a path (starts
    with ".", "/" or "~"), so that a typo fails as "not found" instead of as a
    Hub lookup. With ``suffix_means_file`` a name with a suffix ("notes.txt") is
    local too: data files have suffixes and dataset ids rarely do, while model
    ids often contain dots ("Qwen/Qwen2.5-0.5B"), so model and tokenizer loaders
    leave it off.

    Example::

        local_path("outputs/mlm/final")                          # Path("outputs/mlm/final") if it exists
        local_path("bert-base-uncased")                          # None: a Hub name
        local_path("missing.txt", suffix_means_file=True)        # Path("missing.txt"): report "not found"
    """
    path = Path(source).expanduser()
    written_as_path = str(source).startswith(_PATH_PREFIXES)
    has_suffix = suffix_means_file and Path(source).suffix != ""
    return path if path.exists() or written_as_path or has_suffix else None
