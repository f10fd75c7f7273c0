"""Property tests (hypothesis): random configs, files and batches give a valid result or one ``UserError`` line.

Never another exception, never a traceback: the config parser under random
dotted overrides and yaml files; the corpus, table, sentence-pair, STS and image
readers under random bytes, encodings, empty and huge lines; the collators under
random lengths, rows of only special tokens and batches of one. Every property
runs a fixed, bounded set of examples (``derandomize=True``: the same examples
on every run and machine), so the file stays inside the suite's time budget.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import json
import math
import re
import tarfile
import typing
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import yaml
from hypothesis import HealthCheck, Phase, currently_in_test_context, event, given, settings
from hypothesis import strategies as st
from PIL import Image

from nlpssl.config import load_config, save_config
from nlpssl.data.classification import Columns, load_labelled_splits
from nlpssl.data.collators import IGNORE_INDEX, CausalLMCollator, ClassificationCollator, MLMCollator
from nlpssl.data.corpus import load_corpus
from nlpssl.data.images import IMAGE_EXTENSIONS, load_image_splits
from nlpssl.data.pairs import SentenceViewsCollator, load_sentence_tuples
from nlpssl.data.sts import read_scored_pairs, read_senteval_sts
from nlpssl.data.tokenizer import train_tokenizer
from nlpssl.errors import UserError
from nlpssl.recipes.classification import ClassificationRecipe
from nlpssl.recipes.pretrain import CLMRecipe, MLMRecipe
from nlpssl.recipes.simcse import SimCSERecipe
from nlpssl.recipes.vision import VisionRecipe

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCHEMAS = (MLMRecipe, CLMRecipe, ClassificationRecipe, SimCSERecipe, VisionRecipe)


def bounded(examples: int):
    """Hypothesis settings for one property: ``examples`` fixed examples, no deadline, no example database."""
    return settings(
        max_examples=examples, deadline=None, derandomize=True, database=None,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],  # no "explain" phase: it can take a minute on a failure
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


def result_or_user_error(call: typing.Callable):
    """``call()``'s result, or the :class:`UserError` it raised, checked to be one non-empty line.

    Any other exception propagates and fails the property (hypothesis then shrinks the input).
    """
    try:
        result = call()
    except UserError as error:
        message = str(error)
        assert message.strip() and message.splitlines() == [message], f"not one line: {message!r}"
        tally("UserError: " + re.sub(r"'[^']*'|\S*/\S*|\d+", "_", message[:100])[:60])
        return error
    tally("valid result")
    return result


def tally(outcome: str) -> None:
    """Count an outcome in ``pytest --hypothesis-show-statistics`` (does a property reach valid results at all?)."""
    if currently_in_test_context():
        event(outcome)


_file_numbers = itertools.count()


def new_file(folder: Path, suffix: str, content: bytes) -> Path:
    """A file of ``content`` under a name never used before (so no reader can serve a cached earlier example)."""
    path = folder / f"f{next(_file_numbers)}{suffix}"
    path.write_bytes(content)
    return path


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> typing.Iterator[Path]:
    """A folder for the examples' files, with nlpssl's and datasets' caches inside it for this module."""
    root = tmp_path_factory.mktemp("properties")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NLPSSL_CACHE", str(root / "nlpssl_cache"))
        patch.setattr(datasets.config, "HF_DATASETS_CACHE", str(root / "datasets_cache"))
        yield root


# ---- the config parser ----


def assert_typed(config, schema) -> None:
    """Every field of ``config`` holds a value of its declared type (finite floats, ints that are not bools)."""
    hints = typing.get_type_hints(schema)
    for field in dataclasses.fields(schema):
        assert_value_typed(getattr(config, field.name), hints[field.name], field.name)


def assert_value_typed(value, annotation, where: str) -> None:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if dataclasses.is_dataclass(annotation):
        assert_typed(value, annotation)
    elif type(None) in args:
        if value is not None:
            assert_value_typed(value, next(a for a in args if a is not type(None)), where)
    elif origin is typing.Literal:
        assert value in args, where
    elif origin in (list, tuple):
        assert isinstance(value, origin), where
        for item in value:
            assert_value_typed(item, args[0] if args else str, where)
    elif annotation is float:
        assert isinstance(value, float) and math.isfinite(value), (where, value)
    elif annotation is int:
        assert isinstance(value, int) and not isinstance(value, bool), (where, value)
    else:
        assert isinstance(value, annotation), (where, value)


def schema_fields(schema) -> list[tuple[str, str, typing.Any]]:
    """(section, key, declared type) of every key of a recipe schema."""
    out = []
    for section, section_type in typing.get_type_hints(schema).items():
        out += [(section, key, hint) for key, hint in typing.get_type_hints(section_type).items()]
    return out


NASTY_VALUES = [
    "nan", "inf", "-inf", "1e400", "1e-3", "2.5", "1e5", "10.0", "", " ", "none", "None", "~", "True", "no", "0x10",
    "1_000", "\u0663", "[1, 2]", "{a: 1}", "a,b,,c", "--x", "a\nb", "\r", "\u2028", "-0", "9" * 5000, "bf16",
]
nasty_text = st.one_of(st.sampled_from(NASTY_VALUES), st.text(max_size=12), st.integers().map(str))


@st.composite
def random_override(draw, schema) -> list[str]:
    """One command-line override, often of a real key, with a value that may not fit its type."""
    known = schema_fields(schema)
    section, key, _ = draw(st.sampled_from(known))
    section = draw(st.sampled_from([section] * 5 + [draw(st.text(max_size=6))]))
    key = draw(st.sampled_from([key] * 5 + [draw(st.text(max_size=6))]))
    value = draw(nasty_text)
    form = draw(st.sampled_from(["equals"] * 6 + ["separate"] * 3 + ["garbage"]))
    if form == "equals":
        return [f"--{section}.{key}={value}"]
    if form == "separate":
        return [f"--{section}.{key}", value]
    return [draw(st.sampled_from(["positional", "--", "--=1", f"--{section}", "--config", "-x", f"--{key}=1"]))]


@given(data=st.data())
@bounded(150)
def test_random_dotted_overrides_give_a_typed_config_or_one_line(data):
    schema = data.draw(st.sampled_from(SCHEMAS))
    words = data.draw(st.lists(random_override(schema), max_size=4))
    outcome = result_or_user_error(lambda: load_config(schema, [w for override in words for w in override]))
    if not isinstance(outcome, UserError):
        assert_typed(outcome, schema)


TRUE_WORDS, FALSE_WORDS = ["true", "yes", "on", "1"], ["false", "no", "off", "0"]
words_without_commas = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=8)


def typed_value(annotation) -> st.SearchStrategy[tuple[str, typing.Any]]:
    """(text on the command line, the value the config must then hold) for a field of type ``annotation``."""
    args = typing.get_args(annotation)
    if type(None) in args:
        inner = next(a for a in args if a is not type(None))
        as_none = {"", "none", "null", "~"}
        return st.one_of(
            typed_value(inner).map(lambda pair: (pair[0], None if pair[0].lower() in as_none else pair[1])),
            st.sampled_from(["none", "null", "~", "None", ""]).map(lambda word: (word, None)),
        )
    if typing.get_origin(annotation) is typing.Literal:
        return st.sampled_from(args).map(lambda choice: (choice, choice))
    if typing.get_origin(annotation) is list:
        return st.lists(words_without_commas, min_size=1, max_size=3).map(lambda items: (",".join(items), items))
    if annotation is bool:
        return st.sampled_from([*TRUE_WORDS, *FALSE_WORDS]).flatmap(
            lambda word: st.sampled_from([word, word.upper()]).map(lambda spelled: (spelled, word in TRUE_WORDS))
        )
    if annotation is int:
        return st.integers(-10**9, 10**9).flatmap(
            lambda n: st.sampled_from([str(n), f"{n}.0", f"{n}e0"]).map(lambda spelled: (spelled, n))
        )
    if annotation is float:
        return st.floats(allow_nan=False, allow_infinity=False).map(lambda x: (repr(x), x))
    return st.text(max_size=10).map(lambda text: (text, text))


@given(data=st.data())
@bounded(100)
def test_overrides_of_the_right_type_are_read_exactly_and_survive_a_round_trip(data, workdir):
    schema = data.draw(st.sampled_from(SCHEMAS))
    chosen = data.draw(st.lists(st.sampled_from(schema_fields(schema)), max_size=5, unique_by=lambda f: f[:2]))
    expected, argv = {}, []
    for section, key, annotation in chosen:
        text, value = data.draw(typed_value(annotation))
        expected[(section, key)] = value
        argv.append(f"--{section}.{key}={text}")
    config = load_config(schema, argv)
    assert_typed(config, schema)
    for (section, key), value in expected.items():
        assert getattr(getattr(config, section), key) == value, (section, key)
    saved = workdir / f"config{next(_file_numbers)}.yaml"
    save_config(config, saved)
    assert load_config(schema, ["--config", str(saved)]) == config


yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=10), st.sampled_from(NASTY_VALUES),
)
yaml_values = st.recursive(
    yaml_scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=4,
)


@st.composite
def recipe_mapping(draw, schema) -> dict:
    """A yaml recipe: sections (real or not) holding keys (real or not) with random values."""
    recipe = {}
    for section, key, _ in draw(st.lists(st.sampled_from(schema_fields(schema)), max_size=5)):
        section = draw(st.sampled_from([section] * 5 + [draw(st.text(min_size=1, max_size=5))]))
        key = draw(st.sampled_from([key] * 5 + [draw(st.text(min_size=1, max_size=5))]))
        if draw(st.integers(0, 9)) == 0:
            recipe[section] = draw(yaml_values)  # a section that is not a mapping
        elif isinstance(recipe.get(section, {}), dict):
            recipe.setdefault(section, {})[key] = draw(yaml_values)
    return recipe


@given(data=st.data())
@bounded(120)
def test_random_yaml_recipes_give_a_typed_config_or_one_line(data, workdir):
    schema = data.draw(st.sampled_from(SCHEMAS))
    document = data.draw(st.one_of(recipe_mapping(schema), yaml_values))
    text = yaml.safe_dump(document, allow_unicode=data.draw(st.booleans()))
    recipe = new_file(workdir, ".yaml", text.encode("utf-8"))
    overrides = data.draw(st.lists(random_override(schema), max_size=1))
    argv = ["--config", str(recipe), *(w for override in overrides for w in override)]
    outcome = result_or_user_error(lambda: load_config(schema, argv))
    if not isinstance(outcome, UserError):
        assert_typed(outcome, schema)


@given(content=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(lambda t: t.encode("utf-8"))))
@bounded(80)
def test_random_bytes_as_a_recipe_give_a_typed_config_or_one_line(content, workdir):
    recipe = new_file(workdir, ".yaml", content)
    outcome = result_or_user_error(lambda: load_config(MLMRecipe, ["--config", str(recipe)]))
    if not isinstance(outcome, UserError):
        assert_typed(outcome, MLMRecipe)


# ---- the corpus and table readers ----

ENCODINGS = ["utf-8", "utf-8-sig", "latin-1", "cp1252", "utf-16", "shift_jis"]
huge_line = st.integers(50_000, 200_000).map(lambda n: "w" * n)
line_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\t", "\r", "text", "a,b", '"', "\\N", "null", "\x00", "\ufeff", "\u2028"]),
    huge_line,
)


@st.composite
def encoded_lines(draw) -> bytes:
    """Random lines (empty, blank, huge, odd characters) joined by a random line ending, in a random encoding."""
    lines = draw(st.lists(line_text, max_size=6))
    text = draw(st.sampled_from(["\n", "\r\n", "\n\n"])).join(lines)
    return text.encode(draw(st.sampled_from(ENCODINGS)), errors="replace")


COLUMNS = ("text", "body", "label")
PLAUSIBLE_CELLS = {
    "text": st.text(min_size=1, max_size=20), "body": st.text(min_size=1, max_size=20),
    "label": st.sampled_from([0, 1, 2, "pos", "neg", " neg ", 1.0, True]),
}
SCORE_CELLS = st.sampled_from([0, 1, 2.5, "3", -1e9, 0.1])
odd_cell = st.one_of(
    st.none(), st.just(""), st.booleans(), st.integers(), st.floats(), st.text(max_size=5), huge_line,
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@st.composite
def tables(draw, scores: bool = False) -> tuple[list[str], list[dict]]:
    """(columns, rows): plausible cells (text, small labels or ``scores``) but for a per-example share of
    odd ones (None, numbers, lists, huge), odd columns and odd row counts."""
    odd_in_ten = draw(st.sampled_from([0, 0, 0, 1, 3, 10]))

    def odd() -> bool:
        return draw(st.integers(0, 9)) < odd_in_ten

    columns = list(COLUMNS) if not odd() else draw(st.lists(st.sampled_from(COLUMNS), min_size=1, max_size=3, unique=True))
    rows = []
    for _ in range(draw(st.sampled_from([0, 1, 2])) if odd() else 5):
        plausible = {**PLAUSIBLE_CELLS, "label": SCORE_CELLS} if scores else PLAUSIBLE_CELLS
        rows.append({column: draw(odd_cell if odd() else plausible[column]) for column in columns})
    return columns, rows


def table_bytes(table: tuple[list[str], list[dict]], suffix: str) -> bytes:
    """A table as a .jsonl / .json (list of objects) / .csv / .tsv file."""
    columns, rows = table
    if suffix == ".jsonl":
        return "\n".join(json.dumps(row) for row in rows).encode()
    if suffix == ".json":
        return json.dumps(rows).encode()
    buffer = io.StringIO()
    writer = csv.writer(buffer, delimiter="\t" if suffix == ".tsv" else ",")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row[c] is None else json.dumps(row[c]) if isinstance(row[c], (list, dict)) else row[c] for c in columns])
    return buffer.getvalue().encode()


TABLE_SUFFIXES = [".jsonl", ".json", ".csv", ".tsv"]


@st.composite
def table_files(draw, scores: bool = False) -> tuple[bytes, str]:
    """(content, suffix) of a table file: a generated table, or random bytes under a table's suffix."""
    suffix = draw(st.sampled_from(TABLE_SUFFIXES))
    table = tables(scores).map(lambda table: table_bytes(table, suffix))
    return draw(st.one_of(table, table, table, table, st.binary(max_size=100))), suffix


@st.composite
def any_files(draw) -> tuple[bytes, str]:
    """(content, suffix): text lines in any encoding, tables, or random bytes, under any suffix a corpus may have."""
    suffix = draw(st.sampled_from([".txt", "", ".parquet", *TABLE_SUFFIXES]))
    if suffix in TABLE_SUFFIXES and draw(st.booleans()):
        return draw(tables().map(lambda table: table_bytes(table, suffix))), suffix
    return draw(st.one_of(encoded_lines(), st.binary(max_size=300))), suffix


@given(file=any_files(), txt_mode=st.sampled_from(["auto", "line", "paragraph"]), skip_invalid=st.booleans(),
       column=st.sampled_from(["text", "body"]))
@bounded(70)
def test_any_file_as_a_corpus_gives_documents_of_text_or_one_line(file, txt_mode, skip_invalid, column, workdir):
    content, suffix = file
    path = new_file(workdir, suffix or ".data", content)
    corpus = result_or_user_error(lambda: load_corpus(str(path), column, txt_mode, skip_invalid))
    if isinstance(corpus, UserError):
        return
    assert corpus.column_names == ["text"] and len(corpus) > 0
    for document in corpus["text"]:
        assert isinstance(document, str) and document.strip()
    if suffix in (".txt", "") and (txt_mode == "line" or b"\n\n" not in content.replace(b"\r\n", b"\n")):
        assert not any("\n" in document for document in corpus["text"]), "line mode keeps one line per document"


def labelled_outcome(train: Path, validation: Path | None, regression: bool, pair: bool):
    """load_labelled_splits on the files, checked: every text a string, labels class ids or finite scores; or one line."""
    columns = Columns(text="text", text_pair="body" if pair else None, label="label")
    splits = result_or_user_error(lambda: load_labelled_splits(
        str(train), str(validation) if validation else None, columns=columns, regression=regression, validation_fraction=0.0,
    ))
    if isinstance(splits, UserError):
        return splits
    assert (splits.label_names is None) == regression
    for split in splits.named().values():
        assert set(split.column_names) == {"text", "labels"} | ({"text_pair"} if pair else set())
        for text in [*split["text"], *(split["text_pair"] if pair else [])]:
            assert isinstance(text, str)
        for label in split["labels"]:
            if regression:
                assert isinstance(label, float) and math.isfinite(label)
            else:
                assert isinstance(label, int) and 0 <= label < len(splits.label_names) and len(splits.label_names) >= 2
    return splits


@given(data=st.data(), regression=st.booleans(), pair=st.booleans())
@bounded(60)
def test_any_labelled_file_gives_checked_splits_or_one_line(data, regression, pair, workdir):
    train = data.draw(table_files(scores=regression))
    validation = data.draw(st.one_of(st.none(), st.none(), tables(scores=regression)))
    train_path = new_file(workdir, train[1], train[0])
    validation_path = new_file(workdir, ".jsonl", table_bytes(validation, ".jsonl")) if validation else None
    labelled_outcome(train_path, validation_path, regression, pair)


@pytest.mark.parametrize(
    "content, suffix, regression, message",
    [
        (b'{"text": "a", "label": {"x": 1}}\n{"text": "b", "label": 0}', ".jsonl", False, "label {'x': 1} is a dict"),
        (b"text,label\n1,0\n2,1\n", ".csv", False, "column 'text' holds int values, not text"),
        (b'{"text": "a", "label": "inf"}\n{"text": "b", "label": 1}', ".jsonl", True, "label 'inf' at data row 1 is not a finite number"),
    ],
    ids=["dict-label", "numbers-as-text", "infinite-score"],
)
def test_labelled_files_that_once_crashed_or_passed_garbage_are_one_line(content, suffix, regression, message, workdir):
    error = labelled_outcome(new_file(workdir, suffix, content), None, regression, pair=False)
    assert isinstance(error, UserError) and message in str(error)


@given(file=table_files(), columns=st.sampled_from([["text"], ["text", "body"], ["body", "text", "label"]]))
@bounded(40)
def test_any_file_of_sentence_tuples_gives_sentences_or_one_line(file, columns, workdir):
    path = new_file(workdir, file[1], file[0])
    table = result_or_user_error(lambda: load_sentence_tuples(str(path), columns))
    if isinstance(table, UserError):
        return
    assert table.column_names == columns and len(table) > 0
    for column in columns:
        assert all(isinstance(text, str) and text.strip() for text in table[column])


plausible_score = st.floats(0, 5).map(repr)
score_text = st.one_of(
    plausible_score, plausible_score, plausible_score, st.floats().map(repr), st.sampled_from(["nan", "inf", "", "high", " 3 ", "-1"]),
)


@st.composite
def scored_pair_lines(draw) -> bytes:
    """A tab-separated file of scored pairs: a header that may lack columns, rows that may be ragged, odd cells."""
    odd_in_ten = draw(st.sampled_from([0, 0, 0, 1, 3, 10]))

    def odd() -> bool:
        return draw(st.integers(0, 9)) < odd_in_ten

    header = ["sentence1", "sentence2", "score"] if not odd() else draw(st.sampled_from([["sentence1", "score"], []]))
    sentence = st.text(st.characters(categories=["L", "Zs"]), min_size=1, max_size=15)
    rows = []
    for _ in range(draw(st.sampled_from([3, 1, 5, 0]))):
        plausible = [draw(sentence), draw(sentence), draw(plausible_score)]
        rows.append(draw(st.lists(line_text, max_size=3)) if odd() else plausible)
    text = "\n".join("\t".join(cells) for cells in ([header] if header else []) + rows)
    return text.encode(draw(st.sampled_from(ENCODINGS)) if odd() else "utf-8", errors="replace")


@given(content=st.one_of(scored_pair_lines(), st.binary(max_size=200)), by_index=st.booleans(), ranged=st.booleans())
@bounded(80)
def test_any_file_of_scored_pairs_gives_pairs_or_one_line(content, by_index, ranged, workdir):
    path = new_file(workdir, ".tsv", content)
    names = (0, 1, 2) if by_index else ("sentence1", "sentence2", "score")
    pairs = result_or_user_error(lambda: read_scored_pairs(path, *names, score_range=(0, 5) if ranged else None))
    if isinstance(pairs, UserError):
        return
    assert pairs
    for first, second, score in pairs:
        assert first.strip() and second.strip() and math.isfinite(score)
        assert not ranged or 0 <= score <= 5


@st.composite
def senteval_pair(draw) -> tuple[bytes, bytes]:
    """(input file, gold file) of one SentEval subset: usually as many lines in both, odd lines and scores among them."""
    count = draw(st.integers(0, 5))
    inputs = [draw(st.tuples(line_text, line_text).map("\t".join) | line_text) for _ in range(count)]
    golds = [draw(score_text) for _ in range(count + draw(st.sampled_from([0, 0, 0, 1])))]
    encoding = draw(st.sampled_from(ENCODINGS))
    return "\n".join(inputs).encode(encoding, errors="replace"), "\n".join(golds).encode(encoding, errors="replace")


@given(files=senteval_pair())
@bounded(40)
def test_any_senteval_files_give_pairs_or_one_line(files, workdir):
    inputs, golds = files
    data_dir = workdir / f"senteval{next(_file_numbers)}"
    folder = data_dir / "senteval_sts" / "data" / "downstream" / "STS" / "STS12-en-test"
    folder.mkdir(parents=True)
    for subset in ("MSRpar", "MSRvid", "SMTeuroparl", "surprise.OnWN", "surprise.SMTnews"):
        (folder / f"STS.input.{subset}.txt").write_bytes(inputs)
        (folder / f"STS.gs.{subset}.txt").write_bytes(golds)
    subsets = result_or_user_error(lambda: read_senteval_sts(data_dir, "sts12"))
    if isinstance(subsets, UserError):
        return
    for pairs in subsets.values():
        assert all(isinstance(first, str) and isinstance(second, str) and math.isfinite(score) for first, second, score in pairs)


# ---- image folders and archives ----

IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP", ".tiff": "TIFF"}


@st.composite
def image_bytes(draw, extension: str) -> bytes:
    """An image of random size and mode encoded as ``extension`` says; or random bytes; or a truncated image."""
    width, height = draw(st.integers(1, 24)), draw(st.integers(1, 24))
    mode = draw(st.sampled_from(["RGB", "L", "RGBA", "P", "1"]))
    seed = draw(st.integers(0, 2**16))
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 4), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGBA").convert(mode)
    buffer = io.BytesIO()
    image_format = IMAGE_FORMATS.get(extension, "PNG")
    image.convert("RGB").save(buffer, image_format) if image_format == "JPEG" and mode != "L" else image.save(buffer, image_format)
    encoded = buffer.getvalue()
    kind = draw(st.sampled_from(["whole"] * 4 + ["truncated", "random"]))
    if kind == "truncated":
        return encoded[: draw(st.integers(0, max(len(encoded) - 1, 0)))]
    return draw(st.binary(max_size=64)) if kind == "random" else encoded


@st.composite
def image_trees(draw) -> dict[str, bytes]:
    """{relative path: content}: images (some broken) and other files in class folders, split folders, or flat."""
    folders = st.sampled_from(["cat", "dog", "train/cat", "train/dog", "test/cat", "val/dog", "", "data/cat", ".hidden", "train"])
    extensions = st.sampled_from([*IMAGE_FORMATS, ".JPEG", ".txt", ""])
    tree = {}
    for index in range(draw(st.integers(0, 6))):
        folder, extension = draw(folders), draw(extensions)
        path = f"{folder}/{index}{extension}".lstrip("/")
        tree[path] = draw(image_bytes(extension)) if extension.lower() in IMAGE_EXTENSIONS else draw(st.binary(max_size=16))
    return tree


def write_tree(root: Path, tree: dict[str, bytes]) -> None:
    root.mkdir(parents=True)
    for relative, content in tree.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(content)


def tar_bytes(tree: dict[str, bytes], compression: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as archive:
        for relative, content in tree.items():
            member = tarfile.TarInfo(relative)
            member.size = len(content)
            archive.addfile(member, io.BytesIO(content))
    return buffer.getvalue()


def assert_valid_image_splits(splits: dict, image_size: int, channels: int) -> None:
    """uint8 (N, C, S, S) images in train (and test), labels in range of the class names when there are classes."""
    assert set(splits) <= {"train", "test"} and "train" in splits
    for images in splits.values():
        assert images.images.dtype == torch.uint8 and images.images.shape[1:] == (channels, image_size, image_size)
        if images.labels is not None:
            assert images.labels.shape == (len(images),) and images.labels.dtype == torch.int64
            assert len(images.class_names) >= 1 and all(0 <= label < len(images.class_names) for label in images.labels.tolist())
        if len(images):
            assert images.__getitems__([0])["images"].shape == (1, channels, image_size, image_size)


image_options = st.fixed_dictionaries({
    "image_size": st.sampled_from([8, 12]), "channels": st.sampled_from([1, 3]),
    "bad_images": st.sampled_from(["skip", "error"]), "test_fraction": st.sampled_from([0.0, 0.2, 0.5]),
})


@pytest.mark.filterwarnings("ignore:Truncated File Read")  # PIL warns, then raises: the file counts as unreadable
@given(tree=image_trees(), options=image_options)
@bounded(30)
def test_any_image_folder_gives_uint8_splits_or_one_line(tree, options, workdir):
    root = workdir / f"images{next(_file_numbers)}"
    write_tree(root, tree)
    cache = workdir / "image_cache"
    splits = result_or_user_error(lambda: load_image_splits(str(root), cache_dir=cache, **options))
    if isinstance(splits, UserError):
        return
    assert_valid_image_splits(splits, options["image_size"], options["channels"])
    again = load_image_splits(str(root), cache_dir=cache, **options)  # from the cache this time
    assert all(torch.equal(again[split].images, splits[split].images) for split in splits)


@pytest.mark.filterwarnings("ignore:Truncated File Read")  # PIL warns, then raises: the file counts as unreadable
@given(tree=image_trees(), compression=st.sampled_from(["", "gz"]), damage=st.sampled_from(["none", "none", "truncate", "bytes"]),
       data=st.data(), options=image_options)
@bounded(30)
def test_any_image_archive_gives_uint8_splits_or_one_line(tree, compression, damage, data, options, workdir):
    content = tar_bytes(tree, compression)
    if damage == "truncate":
        content = content[: data.draw(st.integers(0, len(content) - 1))]
    elif damage == "bytes":
        content = data.draw(st.binary(max_size=200))
    archive = new_file(workdir, ".tar.gz" if compression else ".tar", content)
    splits = result_or_user_error(lambda: load_image_splits(str(archive), cache_dir=workdir / "image_cache", **options))
    if not isinstance(splits, UserError):
        assert_valid_image_splits(splits, options["image_size"], options["channels"])


# ---- the collators ----

SENTENCES = [
    "in the beginning god created the heavens and the earth.", "the earth was formless and empty.",
    "darkness was on the surface of the deep.", "god said let there be light, and there was light.",
    "a cat sat on the mat; dogs run in the park!", "numbers like 12 and 345 appear too.",
]


@pytest.fixture(scope="module")
def wordpiece():
    """A tiny WordPiece tokenizer (specials [PAD] [UNK] [CLS] [SEP] [MASK])."""
    return train_tokenizer(SENTENCES * 4, kind="wordpiece", vocab_size=120, model_max_length=64)


@pytest.fixture(scope="module")
def byte_bpe():
    """A tiny byte-level BPE tokenizer (GPT-2 style: end-of-text pads)."""
    return train_tokenizer(SENTENCES * 4, kind="bpe", vocab_size=300, model_max_length=64)


@st.composite
def token_rows(draw, vocab_size: int, special_ids: list[int]) -> list[list[int]]:
    """1-5 rows of 0-20 token ids: any ids, or (sometimes) rows of only special tokens."""
    only_specials = draw(st.sampled_from([False, False, True]))
    token = st.sampled_from(special_ids) if only_specials else st.integers(0, vocab_size - 1)
    return draw(st.lists(st.lists(token, max_size=20), min_size=1, max_size=5))


def padded_length(rows: list[list[int]], multiple_of: int | None) -> int:
    length = max(len(row) for row in rows)
    return -(-length // multiple_of) * multiple_of if multiple_of else length


def assert_right_padded(batch: dict, rows: list[list[int]], multiple_of: int | None, pad_id: int) -> torch.Tensor:
    """Shapes, dtypes and the length mask of a padded batch; returns the original ids, padded, (B, L)."""
    shape = (len(rows), padded_length(rows, multiple_of))
    for key in ("input_ids", "attention_mask", "labels"):
        if key in batch and (key != "labels" or batch[key].dim() == 2):  # classification labels are (B,)
            assert batch[key].shape == shape and batch[key].dtype == torch.long, key
    lengths = torch.tensor([len(row) for row in rows])
    assert torch.equal(batch["attention_mask"], (torch.arange(shape[1]) < lengths[:, None]).long())
    original = torch.full(shape, pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        original[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return original


def word_ids(starts: torch.Tensor) -> torch.Tensor:
    """(B, L) the word each token belongs to, from word-start flags; a row always opens a word."""
    starts = starts.clone()
    starts[:, 0] = 1
    return starts.cumsum(dim=1)


probability = st.one_of(*[st.floats(0.0, 0.5)] * 6, st.sampled_from([0.0, 1.0, -0.1, 1.5, math.nan]))


@given(data=st.data(), mask_prob=probability, mask_token_frac=probability, random_token_frac=probability,
       whole_word=st.booleans(), packed=st.booleans(), multiple_of=st.sampled_from([None, 8]), seed=st.integers(0, 2**31))
@bounded(80)
def test_mlm_batches_mask_only_real_non_special_tokens_and_label_nothing_else(
    wordpiece, data, mask_prob, mask_token_frac, random_token_frac, whole_word, packed, multiple_of, seed,
):
    collate = result_or_user_error(lambda: MLMCollator(
        wordpiece, mask_prob, mask_token_frac, random_token_frac, whole_word_mask=whole_word, pad_to_multiple_of=multiple_of,
    ))
    if isinstance(collate, UserError):
        assert not (0 < mask_prob < 1 and 0 <= mask_token_frac and 0 <= random_token_frac and mask_token_frac + random_token_frac <= 1)
        return
    specials = wordpiece.all_special_ids
    rows = data.draw(token_rows(len(wordpiece), specials))
    examples = [{"input_ids": row} for row in rows]
    for example in examples:
        if packed:  # what tokenize_and_pack gives: the special-token mask, computed once
            example["special_tokens_mask"] = [int(i in specials) for i in example["input_ids"]]
        if whole_word or packed:
            example["word_starts"] = data.draw(st.lists(st.integers(0, 1), min_size=len(example["input_ids"]), max_size=len(example["input_ids"])))
    batch = collate(examples, generator=torch.Generator().manual_seed(seed))
    original = assert_right_padded(batch, rows, multiple_of, wordpiece.pad_token_id)
    special = torch.isin(original, torch.tensor(specials)) | (batch["attention_mask"] == 0)  # (B, L)
    chosen = batch["labels"] != IGNORE_INDEX  # (B, L)
    assert not (chosen & special).any(), "a special or padding token was chosen"
    assert torch.equal(batch["labels"][chosen], original[chosen])
    assert torch.equal(batch["input_ids"][~chosen], original[~chosen]), "a token that is not a target changed"
    changed = batch["input_ids"][chosen]
    assert ((changed == wordpiece.mask_token_id) | ~torch.isin(changed, torch.tensor(specials))).all()
    if whole_word:
        words = word_ids(torch.nn.utils.rnn.pad_sequence(
            [torch.tensor(e["word_starts"] or [1], dtype=torch.long) for e in examples], batch_first=True, padding_value=1,
        ))
        for row in range(len(rows)):
            for word in words[row, : len(rows[row])].unique():
                members = (words[row, : len(rows[row])] == word) & ~special[row, : len(rows[row])]
                decisions = chosen[row, : len(rows[row])][members]
                assert decisions.all() or not decisions.any(), "a word was split by whole-word masking"
    again = collate(examples, generator=torch.Generator().manual_seed(seed))
    assert all(torch.equal(batch[key], again[key]) for key in batch), "the same seed gives the same batch"


@given(data=st.data(), multiple_of=st.sampled_from([None, 8]))
@bounded(40)
def test_causal_lm_batches_target_every_real_token_and_no_padding(byte_bpe, data, multiple_of):
    rows = data.draw(token_rows(len(byte_bpe), byte_bpe.all_special_ids))
    batch = CausalLMCollator(byte_bpe, pad_to_multiple_of=multiple_of)([{"input_ids": row} for row in rows])
    pad_id = byte_bpe.pad_token_id if byte_bpe.pad_token_id is not None else byte_bpe.eos_token_id
    original = assert_right_padded(batch, rows, multiple_of, pad_id)
    real = batch["attention_mask"].bool()
    assert torch.equal(batch["input_ids"], original)
    assert torch.equal(batch["labels"][real], original[real]) and (batch["labels"][~real] == IGNORE_INDEX).all()


@given(data=st.data(), pairs=st.booleans(), regression=st.booleans(), multiple_of=st.sampled_from([None, 8]))
@bounded(40)
def test_classification_batches_pad_each_row_and_keep_labels(wordpiece, data, pairs, regression, multiple_of):
    rows = data.draw(token_rows(len(wordpiece), wordpiece.all_special_ids))
    label = st.floats(-10, 10) if regression else st.integers(0, 5)
    examples = [{"input_ids": row, "labels": data.draw(label)} for row in rows]
    if pairs:
        for example in examples:
            example["token_type_ids"] = [int(i >= len(example["input_ids"]) // 2) for i in range(len(example["input_ids"]))]
    batch = ClassificationCollator(wordpiece, pad_to_multiple_of=multiple_of)(examples)
    original = assert_right_padded(batch, rows, multiple_of, wordpiece.pad_token_id)
    assert torch.equal(batch["input_ids"], original)
    assert batch["labels"].shape == (len(rows),) and batch["labels"].dtype == (torch.float32 if regression else torch.long)
    assert batch["labels"].tolist() == pytest.approx([e["labels"] for e in examples])
    if pairs:
        assert batch["token_type_ids"].shape == original.shape and (batch["token_type_ids"][batch["attention_mask"] == 0] == 0).all()


sentence_text = st.one_of(
    st.text(max_size=40), st.sampled_from(["", " ", "[CLS] [SEP]", "[MASK][MASK]", "[PAD]", "[UNK] [SEP] [CLS]"]),
    st.integers(200, 2000).map(lambda n: "word " * n),
)


@given(data=st.data(), columns=st.sampled_from([["text"], ["a", "b"], ["a", "b", "c"]]), repeat=st.sampled_from([1, 2, 3]),
       max_length=st.sampled_from([4, 16, 32]), multiple_of=st.sampled_from([None, 8]))
@bounded(50)
def test_sentence_view_batches_stack_each_view_of_each_row_in_order(wordpiece, data, columns, repeat, max_length, multiple_of):
    repeat = repeat if len(columns) == 1 else 1
    rows = data.draw(st.lists(st.fixed_dictionaries({column: sentence_text for column in columns}), min_size=1, max_size=4))
    collate = SentenceViewsCollator(wordpiece, columns, repeat=repeat, max_length=max_length, pad_to_multiple_of=multiple_of)
    batch = collate(rows)
    views = collate.num_views
    assert views == len(columns) * repeat
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert ids.shape[0] == views * len(rows) and ids.shape == mask.shape and ids.dtype == torch.long
    assert ids.shape[1] <= padded_length([[0] * max_length], multiple_of)
    assert not multiple_of or ids.shape[1] % multiple_of == 0
    for view in range(views):
        for i, row in enumerate(rows):
            alone = wordpiece(row[columns[view % len(columns)]], truncation=True, max_length=max_length)["input_ids"]
            n = len(alone)
            assert ids[view * len(rows) + i, :n].tolist() == alone and mask[view * len(rows) + i].sum() == n
            assert alone[0] == wordpiece.cls_token_id and alone[-1] == wordpiece.sep_token_id
