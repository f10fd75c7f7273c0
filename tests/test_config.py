from pathlib import Path

import pytest

from nlpssl.config import load_config, save_config
from nlpssl.errors import UserError
from nlpssl.recipes.pretrain import MLMRecipe

REPO = Path(__file__).resolve().parents[1]


def test_yaml_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\n  lr: 5e-4\n  max_steps: 10\ndata:\n  corpus: no\n")
    cfg = load_config(MLMRecipe, ["--config", str(recipe), "--train.max_steps=20", "--mlm.mask_prob", "0.2"])
    assert cfg.train.lr == 5e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.max_steps == 20
    assert cfg.mlm.mask_prob == 0.2
    assert cfg.data.corpus == "no"  # a string field keeps the word, yaml 1.1 would say False


def test_bool_optional_and_literal_coercion():
    cfg = load_config(MLMRecipe, ["--mlm.whole_word_mask=yes", "--tokenizer.path=none", "--train.precision=bf16"])
    assert cfg.mlm.whole_word_mask is True
    assert cfg.tokenizer.path is None
    assert cfg.train.precision == "bf16"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--train.lrr=1"], "unknown key 'lrr'; valid keys are: "),
        (["--trian.lr=1"], "unknown key 'trian'"),
        (["--train.max_steps=abc"], "cannot read 'abc' as int"),
        (["--train.precision=fp8"], "not one of no, bf16, fp16"),
        (["--config", "/nonexistent.yaml"], "not found"),
        (["positional"], "unexpected argument"),
    ],
)
def test_errors_are_one_line_and_actionable(argv, message):
    with pytest.raises(UserError) as error:
        load_config(MLMRecipe, argv)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_key_lists_valid_keys():
    with pytest.raises(UserError, match="batch_size.*lr.*max_steps"):
        load_config(MLMRecipe, ["--train.nope=1"])


def test_yaml_error_names_line(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("train:\n  lr: [1\n")
    with pytest.raises(UserError, match="bad.yaml line"):
        load_config(MLMRecipe, ["--config", str(recipe)])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(MLMRecipe, ["--train.lr=3e-4", "--data.num_proc=2"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(MLMRecipe, ["--config", str(tmp_path / "config.yaml")])
    assert again == cfg


def test_default_recipe_file_matches_schema():
    cfg = load_config(MLMRecipe, [], REPO / "configs" / "mlm.yaml")
    assert cfg.train.output_dir == "outputs/mlm"


def test_an_empty_yaml_section_takes_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train:\nmlm:\n  mask_prob: 0.2\n")  # `train:` with nothing under it is None to yaml
    cfg = load_config(MLMRecipe, ["--config", str(recipe), "--train.max_steps=7"])
    assert cfg.train.max_steps == 7 and cfg.mlm.mask_prob == 0.2


@pytest.mark.parametrize("text, number", [("1e5", 100000), ("10.0", 10), ("-3", -3)])
def test_integers_written_as_floats_are_read_when_whole(text, number):
    assert load_config(MLMRecipe, [f"--train.max_steps={text}"]).train.max_steps == number


@pytest.mark.parametrize("text", ["1e-3", "2.5", "nan", "1e400"])
def test_integers_that_are_not_whole_are_refused(text):
    with pytest.raises(UserError, match=f"train.max_steps: cannot read '{text}' as int"):
        load_config(MLMRecipe, [f"--train.max_steps={text}"])
