"""local_path: the one "local path or Hub name" rule, and the loaders that rely on it."""

from __future__ import annotations

from pathlib import Path

import pytest

from nlpssl.data.classification import load_labelled_splits
from nlpssl.data.corpus import load_corpus
from nlpssl.data.tokenizer import load_tokenizer
from nlpssl.errors import UserError
from nlpssl.models.text import load_pretrained
from nlpssl.sources import local_path
from tests.helpers import tiny_wordpiece


def test_hub_names_are_not_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_path("bert-base-uncased") is None
    assert local_path("sentence-transformers/all-MiniLM-L6-v2") is None
    assert local_path("Qwen/Qwen2.5-0.5B") is None  # model ids may contain dots


def test_existing_or_path_like_sources_are_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my-model").mkdir()
    assert local_path("my-model") == Path("my-model")  # exists, though it reads like a hub name
    assert local_path("./missing") == Path("missing")  # written as a path: report "not found", not a hub error
    assert local_path("/no/such/folder") == Path("/no/such/folder")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert local_path("~/my-model") == tmp_path / "my-model"


def test_a_suffix_means_a_file_only_for_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert local_path("notes.txt", suffix_means_file=True) == Path("notes.txt")
    assert local_path("notes.txt") is None


def test_every_loader_reports_a_missing_local_source_as_not_found(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="checkpoint folder missing not found"):
        load_pretrained(object, "./missing")
    with pytest.raises(UserError, match="tokenizer folder missing not found"):
        load_tokenizer("./missing")
    with pytest.raises(UserError, match="corpus file notes.txt not found"):
        load_corpus("notes.txt")
    with pytest.raises(UserError, match="data file train.csv not found; pass an existing file with --data.train"):
        load_labelled_splits("train.csv")


def test_a_tokenizer_under_the_home_folder_loads(tmp_path, monkeypatch):
    tiny_wordpiece(["in the beginning god created the heavens and the earth"] * 20).save_pretrained(tmp_path / "tok")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_tokenizer("~/tok").tokenize("the earth") == ["the", "earth"]
