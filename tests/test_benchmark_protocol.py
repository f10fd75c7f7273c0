"""The benchmarks' accuracy protocol: selection keeps and restores the best weights, at nlpssl's evaluation steps; seeds summarised."""

from __future__ import annotations

import sys
from types import SimpleNamespace

import datasets
import pytest
import torch
from transformers import BertForSequenceClassification

from nlpssl.models.text import bert_config
from tests.conftest import REPO_ROOT
from tests.helpers import TINY_DIMS, bible_subset, tiny_wordpiece

sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
from common import mean_std  # noqa: E402
from sst2_protocol import SelectOnValidation, accuracy  # noqa: E402


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_wordpiece(bible_subset(20)["text"])


def positive_rows(tokenizer) -> datasets.Dataset:
    """Eight tokenized sentences, all labelled 1."""
    texts = ["in the beginning", "and god said", "let there be light", "and there was light"] * 2
    return datasets.Dataset.from_dict({"input_ids": tokenizer(texts)["input_ids"], "labels": [1] * len(texts)})


def classifier_that_says(tokenizer, label: int) -> BertForSequenceClassification:
    """A tiny BERT classifier whose head bias makes it answer ``label`` for every input."""
    torch.manual_seed(0)
    config = bert_config(TINY_DIMS, tokenizer)
    config.num_labels = 2
    model = BertForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([10.0, -10.0]) if label == 0 else torch.tensor([-10.0, 10.0]))
    return model


def test_selection_keeps_the_best_weights_and_restores_them_after_a_worse_evaluation(tokenizer):
    rows = positive_rows(tokenizer)
    model = classifier_that_says(tokenizer, 1)
    selection = SelectOnValidation(rows, tokenizer, every=5, max_steps=12)
    assert selection.consider(model) == 1.0
    with torch.no_grad():
        model.classifier.bias.copy_(torch.tensor([10.0, -10.0]))  # training made it worse: always 0
    assert selection.consider(model) == 0.0
    assert accuracy(model, rows, tokenizer) == 0.0
    selection.restore(model)
    assert accuracy(model, rows, tokenizer) == 1.0
    assert (selection.best, selection.best_step, selection.evaluations) == (1.0, 5, 2)
    assert selection.seconds > 0


def test_the_trainer_callback_evaluates_at_the_steps_nlpssl_loop_does(tokenizer, monkeypatch):
    selection = SelectOnValidation(positive_rows(tokenizer), tokenizer, every=3, max_steps=7)
    seen = []
    monkeypatch.setattr(selection, "consider", lambda model: seen.append(step))
    callback = selection.trainer_callback()
    for step in range(1, 8):
        callback.on_step_end(None, SimpleNamespace(global_step=step, max_steps=7), None, model=object())
    assert seen == [3, 6, 7]  # the loop: step % eval_every == 0, and the last step


def test_restore_before_any_evaluation_is_an_error(tokenizer):
    with pytest.raises(RuntimeError, match="no evaluation"):
        SelectOnValidation(positive_rows(tokenizer), tokenizer, every=1, max_steps=1).restore(classifier_that_says(tokenizer, 1))


def test_mean_std_gives_the_sample_standard_deviation():
    assert mean_std([80.0, 82.0, 84.0]) == {"mean": 82.0, "std": 2.0, "values": [80.0, 82.0, 84.0]}
    assert mean_std([83.5])["std"] == 0.0
