"""The built-in ``bible-genre`` task: verses of the World English Bible labelled with their book's genre.

Six classes (law, history, poetry, prophecy, gospels, letters), split by
chapter so that no chapter is in two splits: about 1 chapter in 19 validates
and 1 in 19 tests. Made from :func:`nlpssl.data.bible.read_verses` and written
once to the cache as jsonl, which :mod:`nlpssl.data.classification` reads like any labelled file.
"""

from __future__ import annotations

import json
from pathlib import Path

from nlpssl.data.bible import read_verses
from nlpssl.data.cache import cache_dir, write_lines

BUILTIN_TASKS = ("bible-genre",)
SPLITS = ("train", "validation", "test")
# last book number of each genre, in canon order (Genesis = 1 ... Revelation = 66)
_GENRE_ENDS = [(5, "law"), (17, "history"), (22, "poetry"), (39, "prophecy"), (44, "gospels"), (65, "letters"), (66, "prophecy")]


def genre_of(verse_id: int) -> str:
    """The genre of the book a BBCCCVVV verse id belongs to (Revelation counts as prophecy)."""
    return next(name for last_book, name in _GENRE_ENDS if verse_id // 1_000_000 <= last_book)


def split_of(verse_id: int) -> str:
    """The split of a verse's chapter: validation when the chapter number (BBCCC) mod 19 is 0, test when 1, else train."""
    chapter = verse_id // 1000  # BBCCC; 19 is prime to 1000, so every book contributes to each split
    return {0: "validation", 1: "test"}.get(chapter % 19, "train")


def bible_genre_files() -> dict[str, Path]:
    """The task's train / validation / test jsonl files (``text``, ``label``), written on first use.

    Example::

        files = bible_genre_files()
        load_labelled_splits(str(files["train"]), str(files["validation"]), str(files["test"]))
    """
    root = cache_dir() / "tasks" / "bible-genre"
    files = {split: root / f"{split}.jsonl" for split in SPLITS}
    if all(path.is_file() for path in files.values()):
        return files
    rows: dict[str, list[str]] = {split: [] for split in SPLITS}
    for verse_id, text in read_verses("bible-web"):
        rows[split_of(verse_id)].append(json.dumps({"text": text, "label": genre_of(verse_id)}))
    for split, path in files.items():
        write_lines(path, rows[split])
    return files
