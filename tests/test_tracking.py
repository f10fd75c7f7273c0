"""Experiment tracking (``train.report_to``) and the model cards written with every export."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard

from nlpssl.config import flat_dict, load_config
from nlpssl.data.collators import MLMCollator
from nlpssl.errors import UserError
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.recipes.pretrain import MLMRecipe
from nlpssl.runtime import trackers
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, read_metrics, tiny_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    """A 2-step tiny MLM run reporting to TensorBoard, with the recipe's config as hyperparameters."""
    pytest.importorskip("tensorboard")
    tokenizer, blocks = tiny_blocks(20)
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tracked")
    cfg = TrainConfig(
        output_dir=str(out), max_steps=2, batch_size=4, log_every=1, save_every=2, warmup_steps=1, cpu_threads=1,
        report_to="tensorboard",
    )
    hparams = flat_dict(load_config(MLMRecipe, [])) | flat_dict({"train": cfg})
    train(MaskedLM(build_mlm_model(tokenizer, TINY_DIMS)), blocks, MLMCollator(tokenizer), cfg, tokenizer=tokenizer, hparams=hparams)
    return out


def test_tensorboard_scalars_equal_the_metrics_file(tensorboard_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(tensorboard_run.rglob("events.out.tfevents.*"))
    assert events
    logged = {}
    for path in events:
        accumulator = EventAccumulator(str(path.parent))
        accumulator.Reload()
        if "loss" in accumulator.Tags()["scalars"]:
            logged = {event.step: event.value for event in accumulator.Scalars("loss")}
    expected = {r["step"]: r["loss"] for r in read_metrics(tensorboard_run) if "loss" in r}
    assert sorted(logged) == [1, 2] == sorted(expected)
    assert all(logged[step] == pytest.approx(expected[step], rel=1e-6) for step in expected)


def test_model_cards_in_final_and_checkpoint_say_what_trained_them(tensorboard_run):
    for folder in (tensorboard_run / "final", tensorboard_run / "checkpoints" / "step_000002" / "model"):
        card = ModelCard.load(folder / "README.md")
        assert card.data.pipeline_tag == "fill-mask" and card.data.library_name == "transformers"
        assert card.data.tags == ["nlpssl", "mlm"]
        assert card.data.datasets == ["bible-web"] and card.data.license == "other"
        assert "for 2 optimizer steps" in card.text and "public domain" in card.text
        assert 'pipeline("fill-mask"' in card.text


def test_unknown_tracker_is_rejected_by_the_config_and_by_name():
    with pytest.raises(UserError, match="report_to"):
        load_config(MLMRecipe, ["--train.report_to=neptune"])
    with pytest.raises(UserError, match="unknown tracker"):
        trackers("neptune")
    assert trackers("none") == []


def test_a_tracker_that_is_not_installed_names_the_package(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match="pip install wandb"):
        trackers("wandb")
    assert "wandb" not in trackers("all")


def test_a_vision_backbone_card_says_image_feature_extraction(tmp_path):
    spec = importlib.util.spec_from_file_location("pretrain_vision", REPO / "scripts" / "pretrain_vision.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from tests.test_vision_recipe import method_args

    module.main([*method_args("rotation"), f"--train.output_dir={tmp_path}"])
    card = ModelCard.load(tmp_path / "final" / "README.md")
    assert card.data.pipeline_tag == "image-feature-extraction" and card.data.library_name == "nlpssl"
    assert card.data.tags == ["nlpssl", "rotation"] and "load_backbone(" in card.text
    assert "knn_accuracy" in card.text and "images" in card.text
