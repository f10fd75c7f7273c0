"""Output folders: a new run never starts over another, a resume never continues with another config or tokenizer;
and the same command gives the same run (tokenizer, losses) in two new folders."""

import json
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest
import yaml

from nlpssl.config import load_config, to_dict
from nlpssl.errors import UserError
from nlpssl.recipes.pretrain import MLMRecipe, TokenizerConfig, resolve_tokenizer
from nlpssl.run_folder import changed_keys, check_output_dir, output_dir_problem
from tests.helpers import TINY_OVERRIDES, bible_subset, load_script, train_losses

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ONE_PROCESS = SimpleNamespace(is_main_process=True, is_local_main_process=True, wait_for_everyone=lambda: None)


def _config(*overrides: str) -> dict:
    return to_dict(load_config(MLMRecipe, list(overrides)))


def _old_run(folder: Path, *overrides: str) -> Path:
    """A folder as a run leaves it: config.yaml, metrics.jsonl, a complete checkpoint, final/, best/, a tokenizer."""
    (folder / "checkpoints" / "step_000002").mkdir(parents=True)
    (folder / "checkpoints" / "step_000002" / "trainer_state.json").write_text('{"step": 2}')
    for name in ("final", "best", "tokenizer"):
        (folder / name).mkdir()
    (folder / "metrics.jsonl").write_text('{"step": 1, "loss": 7.0}\n')
    (folder / "config.yaml").write_text(yaml.safe_dump(_config(f"--train.output_dir={folder}", *overrides), sort_keys=False))
    return folder


def test_a_new_run_into_a_folder_holding_another_is_refused(tmp_path):
    run = _old_run(tmp_path)
    with pytest.raises(UserError) as caught:
        check_output_dir(ONE_PROCESS, _config(f"--train.output_dir={run}"))
    message = str(caught.value)
    assert message.startswith(f"train.output_dir={run} already holds a run (config.yaml, metrics.jsonl, checkpoints/, final/)")
    assert "--train.resume=auto" in message and "--train.overwrite=true" in message and "\n" not in message
    assert (run / "checkpoints" / "step_000002").is_dir()  # nothing touched
    assert output_dir_problem(tmp_path / "new", "", False, _config()) is None
    (tmp_path / "only_notes").mkdir()
    (tmp_path / "only_notes" / "notes.txt").write_text("mine")
    assert output_dir_problem(tmp_path / "only_notes", "", False, _config()) is None  # not a run


def test_overwrite_clears_the_old_run_and_keeps_other_files(tmp_path):
    run = _old_run(tmp_path)
    (run / "notes.txt").write_text("mine")
    (run / "predictions_test.csv").write_text("text,gold\n")
    check_output_dir(ONE_PROCESS, _config(f"--train.output_dir={run}", "--train.overwrite=true"))
    assert [p.name for p in run.iterdir()] == ["notes.txt"]
    with pytest.raises(UserError, match="give only one of them"):
        check_output_dir(ONE_PROCESS, _config(f"--train.output_dir={run}", "--train.overwrite=true", "--train.resume=auto"))


def test_resume_with_a_changed_config_names_the_keys_and_refuses(tmp_path):
    run = _old_run(tmp_path, "--train.lr=5e-4")
    allowed = [
        "--train.lr=0.0005", "--train.max_steps=900", "--train.log_every=1", "--train.eval_every=7", "--train.save_every=3",
        "--train.keep_checkpoints=5", "--train.eval_batches=2", "--train.num_workers=2", "--train.cpu_threads=1",
    ]
    check_output_dir(ONE_PROCESS, _config(f"--train.output_dir={run}", "--train.resume=auto", *allowed))
    with pytest.raises(UserError) as caught:
        check_output_dir(ONE_PROCESS, _config(f"--train.output_dir={run}", "--train.resume=auto", "--train.lr=1e-3", "--mlm.mask_prob=0.3"))
    message = str(caught.value)
    assert f"the config differs from the run's {run / 'config.yaml'} in mlm.mask_prob, train.lr, which cannot change" in message
    checkpoint = run / "checkpoints" / "step_000002"
    with pytest.raises(UserError, match="in data.block_size"):  # resume=PATH: compared with that checkpoint's run
        check_output_dir(ONE_PROCESS, _config(f"--train.output_dir={tmp_path / 'elsewhere'}", f"--train.resume={checkpoint}", "--data.block_size=64"))


def test_changed_keys_ignores_keys_only_one_side_has():
    saved = {"train": {"lr": 0.001, "seed": 0}, "mlm": {"mask_prob": 0.15}}
    assert changed_keys(saved, {"train": {"lr": 1e-3, "seed": 0, "max_bad_steps": 3}, "mlm": {"mask_prob": 0.15}}) == []
    assert changed_keys(saved, {"train": {"lr": 1e-3, "seed": 1}, "mlm": {"mask_prob": 0.15}}) == ["train.seed"]


def test_a_reused_tokenizer_must_match_its_settings_and_corpus(tmp_path, capsys):
    texts = datasets.Dataset.from_dict({"text": [f"line {i} of a small corpus about sheep and goats" for i in range(60)]})
    settings = TokenizerConfig(vocab_size=80, min_frequency=1)
    trained = resolve_tokenizer(settings, texts, None, 32, tmp_path / "tokenizer")
    assert resolve_tokenizer(settings, texts, None, 32, tmp_path / "tokenizer").get_vocab() == trained.get_vocab()
    with pytest.raises(UserError, match=r"holds a tokenizer this run would not train \(vocab_size 80 -> 90\); use a new train.output_dir"):
        resolve_tokenizer(TokenizerConfig(vocab_size=90, min_frequency=1), texts, None, 32, tmp_path / "tokenizer")
    other = datasets.Dataset.from_dict({"text": texts["text"][:-1]})
    with pytest.raises(UserError, match=r"\(the training corpus\)"):
        resolve_tokenizer(settings, other, None, 32, tmp_path / "tokenizer")


# ---- scripts/pretrain_mlm.py, in this process ----


@pytest.fixture(scope="module")
def pretrain_mlm():
    return load_script("pretrain_mlm")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "chapters.txt"
    path.write_text("\n".join(bible_subset(30)["text"]) + "\n")
    return path


def _args(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        *TINY_OVERRIDES, f"--data.corpus={corpus}", "--data.validation_fraction=0.2", "--train.max_steps=2",
        "--train.log_every=1", "--train.save_every=2", "--train.eval_batches=1", "--train.cpu_threads=1",
        f"--train.output_dir={out}", *extra,
    ]


def _error_of(main, argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as caught:
        main(argv)
    assert caught.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1
    return lines[0]


def test_same_command_same_tokenizer_and_losses_and_a_second_start_is_refused(pretrain_mlm, corpus, tmp_path, capsys):
    first, second = tmp_path / "first", tmp_path / "second"
    pretrain_mlm.main(_args(corpus, first))
    pretrain_mlm.main(_args(corpus, second))
    vocab = [json.loads((run / "final" / "tokenizer.json").read_text())["model"]["vocab"] for run in (first, second)]
    assert vocab[0] == vocab[1] and len(vocab[0]) == 500
    assert train_losses(first) == train_losses(second) and [s for s, _ in train_losses(first)] == [1, 2]

    error = _error_of(pretrain_mlm.main, _args(corpus, first), capsys)
    assert f"train.output_dir={first} already holds a run" in error
    error = _error_of(pretrain_mlm.main, _args(corpus, first, "--train.resume=auto", "--train.lr=0.01"), capsys)
    assert "differs from the run's" in error and "in train.lr, which cannot change on resume" in error
    pretrain_mlm.main(_args(corpus, first, "--train.resume=auto", "--train.max_steps=3"))  # more steps: allowed
    assert [s for s, _ in train_losses(first)] == [1, 2, 3] and train_losses(first)[:2] == train_losses(second)
