import json

import pytest

from nlpssl.data.corpus import load_corpus
from nlpssl.data.text import tokenize_and_pack
from nlpssl.data.tokenizer import load_tokenizer
from nlpssl.errors import UserError
from tests.helpers import bible_subset, tiny_wordpiece


def test_builtin_corpus_is_chapters_of_prose():
    corpus = load_corpus("bible-web")
    assert len(corpus) == 1189
    assert corpus[0]["text"].startswith("In the beginning God created the heavens and the earth.")


def test_txt_lines_and_paragraphs(tmp_path):
    lines = tmp_path / "lines.txt"
    lines.write_text("first document\nsecond document\n\nthird\n")
    assert load_corpus(str(lines), txt_mode="line")["text"] == ["first document", "second document", "third"]
    paragraphs = tmp_path / "paras.txt"
    paragraphs.write_text("one\nstill one\n\ntwo\n")
    assert len(load_corpus(str(paragraphs))) == 2  # auto: blank lines separate documents


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_tabular_formats_with_configurable_column(tmp_path, suffix):
    import pandas as pd

    frame = pd.DataFrame({"body": ["alpha beta", "gamma delta", ""], "id": [1, 2, 3]})
    path = tmp_path / f"c{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_csv(path, sep="\t" if suffix == ".tsv" else ",", index=False)
    corpus = load_corpus(str(path), text_column="body")
    assert corpus.column_names == ["text"] and corpus["text"] == ["alpha beta", "gamma delta"]


def test_missing_column_lists_columns(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "x"}\n')
    with pytest.raises(UserError, match="no column 'text'; its columns are body"):
        load_corpus(str(path))


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(UserError, match="not found"):
        load_corpus(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(UserError, match="is empty"):
        load_corpus(str(tmp_path / "empty.txt"))
    (tmp_path / "blank.txt").write_text("\n  \n\n")
    with pytest.raises(UserError, match="no non-empty documents"):
        load_corpus(str(tmp_path / "blank.txt"))


def test_invalid_utf8_names_offset_or_skips(tmp_path, monkeypatch):
    monkeypatch.setenv("NLPSSL_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"good line\ncaf\xe9 line\nanother good\n")
    with pytest.raises(UserError, match=r"latin1.txt: not valid UTF-8 at byte offset 13"):
        load_corpus(str(path))
    corpus = load_corpus(str(path), skip_invalid_utf8=True)
    assert corpus["text"] == ["good line", "another good"]


def test_packing_marks_boundaries_and_counts_drops():
    corpus = bible_subset(30)
    tokenizer = tiny_wordpiece(corpus["text"])
    blocks, stats = tokenize_and_pack(corpus, tokenizer, block_size=64)
    first = blocks[0]
    assert first["input_ids"][0] == tokenizer.cls_token_id and first["input_ids"][-1] == tokenizer.sep_token_id
    assert all(len(ids) == 64 for ids in blocks["input_ids"])
    inside = [i for i, ids in enumerate(blocks["input_ids"]) if tokenizer.sep_token_id in ids[1:-1]]
    assert inside, "document boundaries inside blocks are marked with [SEP]"
    for ids, special in zip(blocks["input_ids"], blocks["special_tokens_mask"]):
        assert [t in tokenizer.all_special_ids for t in ids] == [bool(s) for s in special]
    assert stats.tokens == stats.packed_tokens + stats.dropped_tokens
    assert 0 <= stats.dropped_tokens < 62  # one batch of documents, less than one block dropped


def test_corpus_smaller_than_a_block():
    corpus = bible_subset(30)
    tokenizer = tiny_wordpiece(corpus["text"])
    with pytest.raises(UserError, match="fewer than one block"):
        tokenize_and_pack(corpus.select([0]).map(lambda _: {"text": "tiny"}), tokenizer, block_size=64)


def test_missing_tokenizer_folder(tmp_path):
    with pytest.raises(UserError, match="not found; train one"):
        load_tokenizer(str(tmp_path / "no-tokenizer"))
