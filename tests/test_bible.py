"""The built-in Bibles: one reader, the chapter corpus and the bible-genre task made from it, cached once."""

from __future__ import annotations

import json

import pytest

from nlpssl.data import bible, bible_genre
from nlpssl.data.bible import chapters_file, read_verses
from nlpssl.data.bible_genre import bible_genre_files, genre_of, split_of
from nlpssl.data.cache import write_lines
from nlpssl.errors import UserError


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPSSL_CACHE", str(tmp_path))
    return tmp_path


def test_verses_in_canon_order_with_apostrophes():
    verses = read_verses("bible-web")
    assert verses[0] == (1001001, "In the beginning God created the heavens and the earth.")
    assert len(verses) > 30_000 and [v for v, _ in verses] == sorted(v for v, _ in verses)
    assert not any("`" in text for _, text in verses)


def test_missing_package_is_a_one_line_error(monkeypatch):
    monkeypatch.setitem(bible.BUILTIN_CORPORA, "bible-none", "pythonbible_none")
    with pytest.raises(UserError, match="pip install pythonbible-none"):
        read_verses("bible-none")


def test_genres_and_chapter_splits_by_hand():
    assert genre_of(1001001) == "law"  # Genesis 1:1
    assert genre_of(19023001) == "poetry"  # Psalm 23
    assert genre_of(40005003) == "gospels"  # Matthew 5:3
    assert genre_of(66022021) == "prophecy"  # Revelation
    assert split_of(1007001) == "validation" and split_of(1008005) == "test" and split_of(1009001) == "train"  # 1007 = 19 x 53


def test_corpus_and_task_are_written_once_from_the_same_verses(fresh_cache, monkeypatch):
    chapters = [json.loads(line)["text"] for line in chapters_file("bible-web").read_text().splitlines()]
    files = bible_genre_files()
    rows = {split: [json.loads(line) for line in path.read_text().splitlines()] for split, path in files.items()}
    verses = read_verses("bible-web")
    assert len(chapters) == 1189 and chapters[0].startswith(verses[0][1] + " " + verses[1][1])
    assert sum(map(len, rows.values())) == len(verses)
    assert {row["label"] for row in rows["train"]} == {"law", "history", "poetry", "prophecy", "gospels", "letters"}
    assert [len(rows[s]) for s in ("train", "validation", "test")] == [28056, 1531, 1515]
    # cached: a second call reads nothing
    monkeypatch.setattr(bible_genre, "read_verses", lambda name: pytest.fail("the task was read again"))
    monkeypatch.setattr(bible, "read_verses", lambda name: pytest.fail("the corpus was read again"))
    assert bible_genre_files() == files and chapters_file("bible-web").is_file()
    assert not list(fresh_cache.rglob(".*.tmp"))


def test_two_writers_filling_one_cache_file_at_once_both_finish_whole(tmp_path):
    """Two processes (here: one, re-entered mid-write) fill the same cache entry: each renames a whole file of its own."""
    target = tmp_path / "corpora" / "x.jsonl"

    def first_writer_lines():
        yield "a1"
        write_lines(target, ["b1", "b2"])  # the second writer starts and finishes while the first is half way
        yield "a2"

    write_lines(target, first_writer_lines())
    assert target.read_text() in ("a1\na2\n", "b1\nb2\n")
    assert not list(tmp_path.rglob(".*.tmp"))
