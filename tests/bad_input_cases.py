"""The bad-input catalogue: every mistake a user can make that we promise to answer with one line.

Each :class:`Case` is a script, its arguments and (optionally) the files it
reads; running it must end with exit status 2 and one ``error: ...`` line that
contains ``expect``. ``tests/test_bad_input.py`` runs every case and checks
that ``docs/bad_input.md`` lists exactly the lines the scripts print, so the
document cannot drift. After adding a case or changing a message::

    python -m tests.bad_input_cases --write     # rewrite docs/bad_input.md from fresh runs
    python -m tests.bad_input_cases             # exit status 1 when docs/bad_input.md is out of date

To add a case, add one ``Case(...)`` line to :data:`CASES`; files it needs come
from a small function of this module (its docstring is the "given" column).
Scripts run in this process (``main(argv)``, as ``python scripts/X.py`` would
run it, minus the imports), each in a fresh folder that is its working directory.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import io
import os
import shlex
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nlpssl  # noqa: F401  (first: makes a torchvision without its compiled ops importable for transformers)

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bad_input.md"
LINES = [f"line {i} of a small corpus about the beginning of the world" for i in range(40)]


# ---- the files cases read (the docstring's first line is the catalogue's "given" column) ----


def corpus_txt(folder: Path) -> None:
    """`corpus.txt`: 40 short lines of text"""
    (folder / "corpus.txt").write_text("\n".join(LINES) + "\n")


def empty_txt(folder: Path) -> None:
    """`empty.txt`: a file of 0 bytes"""
    (folder / "empty.txt").write_bytes(b"")


def blank_txt(folder: Path) -> None:
    """`blank.txt`: three blank lines"""
    (folder / "blank.txt").write_text("\n \n\t\n")


def latin1_txt(folder: Path) -> None:
    """`latin1.txt`: "café" saved as Latin-1 on line 2"""
    (folder / "latin1.txt").write_bytes("a first line\nun café\n".encode("latin-1"))


def one_line_txt(folder: Path) -> None:
    """`one.txt`: a single line of text"""
    (folder / "one.txt").write_text("just one line of text\n")


def two_lines_txt(folder: Path) -> None:
    """`two.txt`: two short lines"""
    (folder / "two.txt").write_text("a b c\nd e f\n")


def body_csv(folder: Path) -> None:
    """`corpus.csv`: columns `body`, `stars`"""
    (folder / "corpus.csv").write_text("body,stars\na fine film,5\na dull film,1\n")


def numbers_csv(folder: Path) -> None:
    """`numbers.csv`: a `text` column of numbers"""
    (folder / "numbers.csv").write_text("text\n1\n2\n3\n")


def bad_yaml(folder: Path) -> None:
    """`bad.yaml`: `lr: [1` (a list never closed)"""
    (folder / "bad.yaml").write_text("train:\n  lr: [1\n")


def ten_steps_yaml(folder: Path) -> None:
    """`recipe.yaml`: `max_steps: ten`"""
    (folder / "recipe.yaml").write_text("train:\n  max_steps: ten\n")


def list_section_yaml(folder: Path) -> None:
    """`recipe.yaml`: `train: [a, b]` (a list where a section belongs)"""
    (folder / "recipe.yaml").write_text("train: [a, b]\n")


def latin1_yaml(folder: Path) -> None:
    """`recipe.yaml`: a comment with "é" saved as Latin-1"""
    (folder / "recipe.yaml").write_bytes("# réglages\ntrain:\n  lr: 1e-3\n".encode("latin-1"))


def tiny_bert(folder: Path, vocab_size: int | None = None) -> None:
    """`bert/`: a 1-layer BERT saved with its WordPiece tokenizer"""
    from transformers import BertConfig, BertForMaskedLM

    from nlpssl.data.tokenizer import train_tokenizer

    tokenizer = train_tokenizer(LINES, kind="wordpiece", vocab_size=120)
    config = BertConfig(
        vocab_size=vocab_size or len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=64,
    )
    BertForMaskedLM(config).save_pretrained(folder / "bert")
    tokenizer.save_pretrained(folder / "bert")


def corpus_and_bert(folder: Path) -> None:
    """`corpus.txt`; `bert/`: a 1-layer BERT with its WordPiece tokenizer (no end-of-text token)"""
    corpus_txt(folder)
    tiny_bert(folder)


def small_bert_big_tokenizer(folder: Path) -> None:
    """`corpus.txt`; `bert/`: a BERT with 60 embeddings; `tok/`: a WordPiece tokenizer of about 120 tokens"""
    from nlpssl.data.tokenizer import train_tokenizer

    corpus_txt(folder)
    tiny_bert(folder, vocab_size=60)
    train_tokenizer(LINES, kind="wordpiece", vocab_size=120).save_pretrained(folder / "tok")


def reviews(folder: Path, train_rows: str, dev_rows: str = "") -> None:
    (folder / "train.csv").write_text("review,stars\n" + train_rows)
    if dev_rows:
        (folder / "dev.csv").write_text("review,stars\n" + dev_rows)


def reviews_csv(folder: Path) -> None:
    """`bert/`; `train.csv`: columns `review`, `stars`"""
    tiny_bert(folder)
    reviews(folder, "a fine film,5\na dull film,1\nfine,5\ndull,1\n")


def one_star_csv(folder: Path) -> None:
    """`bert/`; `train.csv`: every row has 5 stars"""
    tiny_bert(folder)
    reviews(folder, "a fine film,5\nfine,5\n")


def unseen_label_csv(folder: Path) -> None:
    """`bert/`; `train.csv` with stars 1 and 5; `dev.csv` with a 3"""
    tiny_bert(folder)
    reviews(folder, "a fine film,5\na dull film,1\n", "so-so,3\n")


def missing_label_csv(folder: Path) -> None:
    """`bert/`; `train.csv` whose second row has no stars"""
    tiny_bert(folder)
    reviews(folder, "a fine film,5\na dull film,\nfine,1\n")


def a_run(folder: Path) -> None:
    """`run/config.yaml`: the folder of an earlier run"""
    (folder / "run").mkdir()
    (folder / "run" / "config.yaml").write_text("train:\n  max_steps: 10\n")


def empty_folder(folder: Path) -> None:
    """`images/`: an empty folder"""
    (folder / "images").mkdir()


def notes_folder(folder: Path) -> None:
    """`notes/`: a folder holding only `readme.txt`"""
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("no pictures here\n")


# ---- the catalogue: one line per case ----


@dataclass(frozen=True)
class Case:
    """One bad input: ``python scripts/<script> <args>`` run in a folder that ``given`` filled."""

    name: str
    script: str
    args: tuple[str, ...]
    expect: str  # a part of the one error line, checked on every run
    given: Callable[[Path], None] | None = None
    status: int = 2


def case(name: str, script: str, args: str, expect: str, given: Callable[[Path], None] | None = None, status: int = 2) -> Case:
    """A :class:`Case` whose arguments are written as one shell-quoted string."""
    return Case(name, script, tuple(shlex.split(args)), expect, given, status)


MLM, CLM, TOKENIZER, SIMCSE, CLASSIFY, VISION = (
    "pretrain_mlm.py", "pretrain_clm.py", "train_tokenizer.py", "train_simcse.py", "finetune_classification.py", "pretrain_vision.py",
)
SMALL = "--data.corpus=corpus.txt --tokenizer.vocab_size=120"  # a tokenizer trained in a blink

CASES: list[Case] = [
    # the config: any script
    case("unknown-key", MLM, "--mlm.nope=1", "mlm: unknown key 'nope'; valid keys are:"),
    case("unknown-section", MLM, "--trian.lr=1e-3", "config: unknown key 'trian'"),
    case("no-section", MLM, "--lr=1e-3", "override --lr needs the form --section.key=value"),
    case("positional-argument", MLM, "corpus.txt", "unexpected argument 'corpus.txt'"),
    case("missing-value", MLM, "--train.lr", "--train.lr needs a value"),
    case("not-an-int", MLM, "--train.max_steps=abc", "train.max_steps: cannot read 'abc' as int"),
    case("fractional-int", MLM, "--train.max_steps=1e-3", "train.max_steps: cannot read '1e-3' as int"),
    case("not-a-float", MLM, "--train.lr=fast", "train.lr: cannot read 'fast' as float"),
    case("nan-float", MLM, "--train.lr=nan", "train.lr: cannot read 'nan' as float"),
    case("not-a-bool", MLM, "--mlm.whole_word_mask=maybe", "mlm.whole_word_mask: cannot read 'maybe' as bool"),
    case("not-a-choice", MLM, "--train.precision=fp8", "train.precision: 'fp8' is not one of no, bf16, fp16"),
    case("unknown-tokenizer-kind", TOKENIZER, "--tokenizer.kind=unigram", "'unigram' is not one of wordpiece, bpe"),
    case("missing-recipe", MLM, "--config missing.yaml", "config file missing.yaml not found"),
    case("invalid-yaml", MLM, "--config bad.yaml", "bad.yaml line 3: not valid yaml", bad_yaml),
    case("bad-yaml-value", MLM, "--config recipe.yaml", "train.max_steps: cannot read 'ten' as int", ten_steps_yaml),
    case("yaml-list-section", MLM, "--config recipe.yaml", "train: expected a mapping, got list", list_section_yaml),
    case("yaml-not-utf8", MLM, "--config recipe.yaml", "recipe.yaml: not valid UTF-8 at byte offset 3", latin1_yaml),
    # the output folder
    case("output-dir-holds-a-run", MLM, "--train.output_dir=run", "train.output_dir=run already holds a run (config.yaml)", a_run),
    case("overwrite-and-resume", MLM, "--train.overwrite=true --train.resume=auto", "give only one of them"),
    # text corpora
    case("missing-corpus", MLM, "--data.corpus=missing.txt", "corpus file missing.txt not found"),
    case("empty-corpus", MLM, "--data.corpus=empty.txt", "corpus file empty.txt is empty", empty_txt),
    case("blank-corpus", MLM, "--data.corpus=blank.txt", "corpus blank.txt has no non-empty documents", blank_txt),
    case("corpus-not-utf8", TOKENIZER, "--data.corpus=latin1.txt", "latin1.txt: not valid UTF-8 at byte offset 19", latin1_txt),
    case("wrong-column", MLM, "--data.corpus=corpus.csv", "corpus.csv has no column 'text'; its columns are body, stars", body_csv),
    case("column-of-numbers", TOKENIZER, "--data.corpus=numbers.csv", "column 'text' holds int values, not text", numbers_csv),
    case("one-document", MLM, "--data.corpus=one.txt", "cannot hold out 0.02 of 1 document(s) for validation", one_line_txt),
    case("corpus-under-one-block", MLM, "--data.corpus=two.txt --tokenizer.vocab_size=120", "fewer than one block of 128", two_lines_txt),
    case("block-too-small", MLM, f"{SMALL} --data.block_size=2", "data.block_size=2 is too small; use at least 10", corpus_txt),
    # tokenizers and models
    case("missing-tokenizer", MLM, "--tokenizer.path=./missing_tokenizer", "tokenizer folder missing_tokenizer not found"),
    case("missing-checkpoint", MLM, "--model.checkpoint=./missing_model", "missing_model not found"),
    case("vocab-mismatch", MLM, "--data.corpus=corpus.txt --data.block_size=16 --model.checkpoint=bert --model.architecture=null "
         "--tokenizer.path=tok",
         "but the model's vocabulary has 60", small_bert_big_tokenizer),
    case("mlm-without-mask-token", MLM, f"{SMALL} --tokenizer.kind=bpe", "the tokenizer has no mask token", corpus_txt),
    case("unknown-mlm-architecture", MLM, "--model.architecture=gpt5",
         "model.architecture=gpt5 is not known; choose one of bert, modernbert, roberta-prelayernorm"),
    case("checkpoint-architecture-mismatch", MLM, "--data.corpus=corpus.txt --data.block_size=16 --model.checkpoint=bert "
         "--model.architecture=modernbert", "is a bert model but model.architecture=modernbert", corpus_and_bert),
    case("heads-do-not-divide", MLM, f"{SMALL} --data.block_size=16 --model.hidden_size=30 --model.num_heads=4",
         "model.hidden_size=30 must be divisible by model.num_heads=4", corpus_txt),
    # masking
    case("mask-prob-above-1", MLM, f"{SMALL} --mlm.mask_prob=1.5", "mlm.mask_prob=1.5 must lie strictly between 0 and 1", corpus_txt),
    case("mask-prob-0", MLM, f"{SMALL} --mlm.mask_prob=0", "mlm.mask_prob=0.0 must lie strictly between 0 and 1", corpus_txt),
    case("mask-fractions-over-1", MLM, f"{SMALL} --mlm.mask_token_frac=0.9 --mlm.random_token_frac=0.2",
         "with a sum of at most 1", corpus_txt),
    case("clm-without-eos-token", CLM, "--data.corpus=corpus.txt --data.block_size=16 --tokenizer.path=bert",
         "gpt-style packing needs a tokenizer with an end-of-text (eos) token", corpus_and_bert),
    # classification
    case("classification-wrong-column", CLASSIFY, "--model.checkpoint=bert --data.train=train.csv",
         "train.csv has no column 'text'; its columns are review, stars", reviews_csv),
    case("single-class", CLASSIFY, "--model.checkpoint=bert --data.train=train.csv --data.text_column=review --data.label_column=stars",
         "every training row has the label '5'", one_star_csv),
    case("unseen-label", CLASSIFY, "--model.checkpoint=bert --data.train=train.csv --data.validation=dev.csv "
         "--data.text_column=review --data.label_column=stars", "label(s) '3' (1 row(s)) never occur in the training data",
         unseen_label_csv),
    case("missing-label", CLASSIFY, "--model.checkpoint=bert --data.train=train.csv --data.text_column=review --data.label_column=stars",
         "1 of 3 row(s) have no label in column 'stars', first at data row 2", missing_label_csv),
    case("missing-train-file", CLASSIFY, "--model.checkpoint=bert --data.train=missing.csv", "data file missing.csv not found", tiny_bert),
    # SimCSE
    case("simcse-batch-of-one", SIMCSE, "--data.train=corpus.txt --data.split_sentences=false --train.batch_size=1",
         "train.batch_size must be at least 2", corpus_txt),
    case("negative-without-positive", SIMCSE, "--data.negative_column=hard_neg",
         "data.negative_column needs data.positive_column"),
    # vision
    case("unknown-method", VISION, "--method=dino", "--method=dino is unknown; choose from: simclr, moco"),
    case("unknown-architecture", VISION, "--model.architecture=vgg", "model.architecture: 'vgg' is not one of resnet18, vit"),
    case("method-architecture-mismatch", VISION, "--method=mae --model.architecture=resnet18",
         "method mae trains a vit backbone; set --model.architecture=vit"),
    case("queue-not-a-multiple", VISION, "--method=moco --method.queue_size=100 --train.batch_size=8",
         "method.queue_size=100 must be a multiple of the global batch 8"),
    case("patch-does-not-divide", VISION, "--method=mae --model.patch_size=5", "model.patch_size=5 does not divide data.image_size=32"),
    case("mask-ratio-above-1", VISION, "--method=mae --model.mask_ratio=1.5", "model.mask_ratio=1.5 must lie strictly between 0 and 1"),
    case("mask-ratio-0", VISION, "--method=mae --model.mask_ratio=0", "model.mask_ratio=0.0 must lie strictly between 0 and 1"),
    case("vision-batch-of-one", VISION, "--train.batch_size=1", "train.batch_size=1: simclr needs at least 2 images per process"),
    case("jigsaw-too-small", VISION, "--method=jigsaw --data.image_size=16", "data.image_size=16 is too small; use 24 or more"),
    case("zero-temperature", VISION, "--method.temperature=0", "method.temperature=0.0 must be positive"),
    case("missing-image-folder", VISION, "--model.width=8 --data.source=missing_images", "image source 'missing_images' not found"),
    case("empty-image-folder", VISION, "--model.width=8 --data.source=images", "is empty; put images in it", empty_folder),
    case("folder-without-images", VISION, "--model.width=8 --data.source=notes", "no images (.jpg", notes_folder),
    # evaluation scripts
    case("sts-missing-model", "evaluate_sts.py", "missing_model", "missing_model"),
    case("vision-eval-missing-model", "evaluate_vision.py", "missing_model", "missing_model"),
]


# ---- running the cases ----


@dataclass(frozen=True)
class Outcome:
    """What a case did: its exit status and the ``error:`` lines it printed (or the traceback of a crash)."""

    status: int | None
    errors: tuple[str, ...]
    crash: str = ""


_scripts: dict[str, object] = {}


def script_main(script: str) -> Callable[[list[str]], None]:
    """``main`` of ``scripts/<script>``, imported once."""
    if script not in _scripts:
        spec = importlib.util.spec_from_file_location(f"bad_input_{Path(script).stem}", REPO / "scripts" / script)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses defined in the script look their module up there
        spec.loader.exec_module(module)
        _scripts[script] = module
    return _scripts[script].main


def run_case(case: Case, folder: Path) -> Outcome:
    """Run ``case`` in ``folder`` (made and filled here); paths under it are printed relative to it."""
    folder.mkdir(parents=True, exist_ok=True)
    if case.given is not None:
        case.given(folder)
    stderr, stdout, status, crash = io.StringIO(), io.StringIO(), 0, ""
    previous = os.getcwd()
    os.chdir(folder)
    try:
        with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
            script_main(case.script)(list(case.args))
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    except Exception:  # noqa: BLE001 - a crash is what this catalogue exists to catch; the test shows it
        status, crash = None, traceback.format_exc()
    finally:
        os.chdir(previous)
    errors = tuple(_relative(line, folder) for line in stderr.getvalue().splitlines() if line.startswith("error:"))
    return Outcome(status, errors, crash)


def _relative(line: str, folder: Path) -> str:
    for root in {str(folder.resolve()), str(folder)}:
        line = line.replace(root + os.sep, "").replace(root, ".")
    return line.replace(str(REPO) + os.sep, "")


def run_all(cases: list[Case], root: Path) -> dict[str, Outcome]:
    """Every case in a folder of its own under ``root``, with nlpssl's cache there too."""
    previous = os.environ.get("NLPSSL_CACHE")
    os.environ["NLPSSL_CACHE"] = str(root / "nlpssl_cache")
    try:
        return {case.name: run_case(case, root / case.name) for case in cases}
    finally:
        if previous is None:
            os.environ.pop("NLPSSL_CACHE", None)
        else:
            os.environ["NLPSSL_CACHE"] = previous


# ---- the document ----

HEADER = """# Bad input: what each mistake prints

One section per script; a row is the command `python scripts/<script> <arguments>`,
run in a folder holding the files under "given", that ends with the exit status
and the one `error:` line shown (on stderr; no traceback).

`tests/test_bad_input.py` runs every row and fails when this file differs from
what the scripts print, so it cannot drift; `python -m tests.bad_input_cases --write`
rewrites it from fresh runs. The cases, and the files each one reads, are in
`tests/bad_input_cases.py`: add a mistake there with one line.

Under `accelerate launch` the launcher adds a traceback of its own after the
line (its child exited non-zero); `accelerate launch -q ...` or `python
scripts/...` shows the line alone.
"""


def _cell(text: str) -> str:
    """Markdown table cell holding ``text`` as code (pipes escaped)."""
    text = text.replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    return f"{fence}{text}{fence}" if text else ""


def _given(case: Case) -> str:
    if case.given is None:
        return ""
    return (case.given.__doc__ or case.given.__name__).strip().splitlines()[0].replace("|", "\\|")


def render(cases: list[Case], outcomes: dict[str, Outcome]) -> str:
    """The markdown catalogue: one section per script, one row per case, with the line its run printed."""
    parts = [HEADER]
    for script in dict.fromkeys(case.script for case in cases):
        parts.append(f"\n## `scripts/{script}`\n\n| case | arguments | given | prints | exit status |\n|---|---|---|---|---|\n")
        for case in (c for c in cases if c.script == script):
            outcome = outcomes[case.name]
            printed = outcome.errors[-1] if outcome.errors else "(no error line)"
            arguments = _cell(shlex.join(case.args))
            parts.append(f"| {case.name} | {arguments} | {_given(case)} | {_cell(printed)} | {outcome.status} |\n")
    return "".join(parts)


def fresh_document(cases: list[Case] = CASES) -> str:
    """Run every case in a temporary folder and render the catalogue."""
    with tempfile.TemporaryDirectory(prefix="bad_input_") as root:
        return render(cases, run_all(cases, Path(root)))


def main(argv: list[str]) -> int:
    """``--write``: rewrite docs/bad_input.md; else exit status 1 (and a diff) when it is out of date."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets

    datasets.disable_progress_bars()
    document = fresh_document()
    if "--write" in argv:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        DOC.write_text(document)
        print(f"wrote {DOC.relative_to(REPO)} ({len(CASES)} cases)")
        return 0
    current = DOC.read_text() if DOC.is_file() else ""
    sys.stdout.writelines(difflib.unified_diff(current.splitlines(True), document.splitlines(True), str(DOC), "fresh runs"))
    return int(current != document)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
