"""Sequence classification: labelled data checks, dynamic padding, Hugging Face loss parity,
prediction order, early stopping, and the fine-tuning script end to end."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForSequenceClassification, BertForMaskedLM, pipeline

from nlpssl.data.classification import Columns, load_labelled_splits, tokenize_splits
from nlpssl.data.collators import ClassificationCollator
from nlpssl.errors import UserError
from nlpssl.evaluation.classification import ValidationScores, predict_logits, write_predictions
from nlpssl.evaluation.selection import KeepBest
from nlpssl.models.text import bert_config, build_classifier
from nlpssl.objectives.classification import SequenceClassification
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, bible_subset, read_metrics, tiny_wordpiece

REPO = Path(__file__).resolve().parents[1]
WORDS = {"good": ["great fun", "a fine film", "warm and wise", "lovely acting"], "bad": ["dull mess", "a weak plot", "boring and long", "awful acting"]}


def write_rows(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def sentiment_rows(repeats: int = 6) -> list[dict]:
    return [{"review": f"{text} {i}", "stars": label} for i in range(repeats) for label, texts in WORDS.items() for text in texts]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, one_torch_thread):
    """A tiny BERT masked-LM folder with its tokenizer, as pretrain_mlm.py leaves one."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = tiny_wordpiece(list(bible_subset(40)["text"]) + [t for texts in WORDS.values() for t in texts])
    torch.manual_seed(0)
    BertForMaskedLM(bert_config(TINY_DIMS, tokenizer)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


def test_labels_are_sorted_class_ids_and_named(tmp_path):
    train_file = write_rows(tmp_path / "train.csv", sentiment_rows())
    dev_file = write_rows(tmp_path / "dev.csv", [{"review": "fine", "stars": "good"}, {"review": "dull", "stars": "bad"}])
    splits = load_labelled_splits(str(train_file), str(dev_file), columns=Columns(text="review", label="stars"))
    assert splits.label_names == ["bad", "good"]
    assert splits.validation["labels"] == [1, 0]
    renamed = load_labelled_splits(str(train_file), str(dev_file), columns=Columns(text="review", label="stars"), label_names=["neg", "pos"])
    assert renamed.label_names == ["neg", "pos"] and renamed.validation["labels"] == [1, 0]


@pytest.mark.parametrize(
    "train_rows, dev_rows, columns, message",
    [
        ([{"review": "a", "stars": "good"}, {"review": "b", "stars": ""}], None, Columns("review", None, "stars"), "have no label"),
        ([{"review": "a", "stars": "good"}, {"review": "b", "stars": "bad"}], [{"review": "c", "stars": "meh"}],
         Columns("review", None, "stars"), "'meh'.*never occur in the training data"),
        ([{"review": "a", "stars": "good"}], None, Columns("body", None, "stars"), "no column 'body'; its columns are review, stars"),
        ([{"review": "a", "stars": "good"}, {"review": "b", "stars": "good"}], None, Columns("review", None, "stars"), "at least two classes"),
    ],
    ids=["missing-label", "unseen-label", "unknown-column", "single-class"],
)
def test_bad_labelled_data_is_a_one_line_user_error(tmp_path, train_rows, dev_rows, columns, message):
    train_file = write_rows(tmp_path / "train.csv", train_rows)
    dev_file = str(write_rows(tmp_path / "dev.csv", dev_rows)) if dev_rows else None
    with pytest.raises(UserError, match=message) as error:
        load_labelled_splits(str(train_file), dev_file, columns=columns, validation_fraction=0.0)
    assert "\n" not in str(error.value)


def test_headerless_pairs_file_for_regression(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text('a man sings,"a man, singing",4.5\na dog runs,a cat sleeps,0.5\na car,a truck,2.0\n')
    columns = Columns("sentence1", "sentence2", "score", column_names=("sentence1", "sentence2", "score"))
    splits = load_labelled_splits(str(path), str(path), columns=columns, regression=True)
    assert splits.label_names is None and splits.train["labels"] == [4.5, 0.5, 2.0]
    assert splits.train["text_pair"][0] == "a man, singing"


def test_collator_pads_to_the_longest_row_of_the_batch(tiny_checkpoint):
    _, tokenizer = tiny_checkpoint
    batch = ClassificationCollator(tokenizer)(
        [{"input_ids": [2, 7, 8, 3], "token_type_ids": [0, 0, 1, 1], "labels": 1}, {"input_ids": [2, 3], "token_type_ids": [0, 0], "labels": 0}]
    )
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[2, 7, 8, 3], [2, 3, pad, pad]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 1], [0, 0, 0, 0]]
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [1, 0]
    scores = ClassificationCollator(tokenizer)([{"input_ids": [2, 3], "labels": 0.5}])["labels"]
    assert scores.dtype == torch.float32


@pytest.mark.parametrize("label_names", [["bad", "good", "meh"], None], ids=["classes", "regression"])
def test_loss_and_gradients_match_hugging_face(tiny_checkpoint, label_names):
    folder, tokenizer = tiny_checkpoint
    torch.manual_seed(0)
    model = build_classifier(str(folder), tokenizer, label_names).eval()
    encoded = tokenizer(["great fun", "a weak plot that drags on", "lovely"], ["ok", "no", "fine film"], padding=True, return_tensors="pt")
    labels = torch.tensor([2, 0, 1]) if label_names else torch.tensor([4.5, 0.25, 3.0])
    reference = model(**encoded, labels=labels).loss
    reference.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    loss = SequenceClassification(model)(dict(encoded) | {"labels": labels})["loss"]
    loss.backward()
    torch.testing.assert_close(loss, reference)
    for ours, theirs in zip((p.grad for p in model.parameters()), expected):
        torch.testing.assert_close(ours, theirs)


def test_random_init_keeps_the_architecture_but_not_the_weights(tiny_checkpoint):
    folder, tokenizer = tiny_checkpoint
    pretrained = build_classifier(str(folder), tokenizer, ["a", "b"])
    scratch = build_classifier(str(folder), tokenizer, ["a", "b"], random_init=True)
    assert type(pretrained) is type(scratch) and scratch.config.id2label == {0: "a", 1: "b"}
    word_embeddings = "bert.embeddings.word_embeddings.weight"
    saved = BertForMaskedLM.from_pretrained(folder).state_dict()[word_embeddings]
    assert torch.equal(pretrained.state_dict()[word_embeddings], saved)
    assert not torch.equal(scratch.state_dict()[word_embeddings], saved)


def test_vocabulary_larger_than_the_checkpoint_is_a_user_error(tiny_checkpoint):
    folder, _ = tiny_checkpoint
    bigger = tiny_wordpiece(list(bible_subset(200)["text"]))
    bigger.add_tokens([f"extra{i}" for i in range(600)])
    with pytest.raises(UserError, match="use the tokenizer saved with the checkpoint"):
        build_classifier(str(folder), bigger, ["a", "b"])


def _splits(tmp_path, tokenizer, repeats=6):
    train_file = write_rows(tmp_path / "train.csv", sentiment_rows(repeats))
    splits = load_labelled_splits(str(train_file), columns=Columns("review", None, "stars"), validation_fraction=0.25)
    return tokenize_splits(splits, tokenizer, max_length=16)


def test_predictions_come_back_in_row_order(tiny_checkpoint, tmp_path):
    folder, tokenizer = tiny_checkpoint
    splits = _splits(tmp_path, tokenizer)
    objective = SequenceClassification(build_classifier(str(folder), tokenizer, splits.label_names)).eval()
    collate = ClassificationCollator(tokenizer)
    logits = predict_logits(objective, splits.validation, collate, batch_size=5)
    one_by_one = torch.cat([objective.logits(collate([row])) for row in splits.validation])
    torch.testing.assert_close(logits, one_by_one, rtol=1e-4, atol=1e-5)
    written = write_predictions(tmp_path / "p.csv", splits.validation, logits, splits.label_names)
    rows = list(csv.DictReader(written.open()))
    assert len(rows) == len(splits.validation) and set(rows[0]) == {"text", "gold", "predicted", "probability"}
    assert all(0.5 <= float(r["probability"]) <= 1.0 for r in rows)


def test_patience_stops_training_and_keeps_the_best(tiny_checkpoint, tmp_path):
    folder, tokenizer = tiny_checkpoint
    splits = _splits(tmp_path, tokenizer)
    objective = SequenceClassification(build_classifier(str(folder), tokenizer, splits.label_names))
    collate = ClassificationCollator(tokenizer)
    constant = KeepBest(lambda o: {"val_loss": 1.0}, "val_loss", tmp_path / "best", tokenizer, higher_is_better=False, patience=2)
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), max_steps=50, batch_size=4, eval_every=2, save_every=100, log_every=2, cpu_threads=1)
    train(objective, splits.train.select_columns(["input_ids", "labels"]), collate, cfg, evaluators=[constant])
    evals = [r["step"] for r in read_metrics(tmp_path / "run") if "val_loss" in r]
    assert evals == [2, 4, 6] and constant.should_stop  # first sets the best, two more without improvement
    assert (tmp_path / "best" / "best.json").is_file() and (tmp_path / "run" / "checkpoints" / "step_000006").is_dir()
    scores = ValidationScores(splits.validation, collate, splits.label_names)(objective)
    assert set(scores) == {"val_loss", "val_accuracy", "val_f1", "val_f1_macro", "val_matthews_correlation"}


class _Exportable:
    def export(self, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)


def test_keep_best_takes_up_the_recorded_best_on_resume(tmp_path):
    first = KeepBest(lambda o: {"val_accuracy": 0.7}, "val_accuracy", tmp_path)
    first(_Exportable())
    assert first.pending_export() == tmp_path and not (tmp_path / "best.json").exists()  # the loop exports first
    first.on_exported(tmp_path)
    resumed = KeepBest(lambda o: {"val_accuracy": 0.6}, "val_accuracy", tmp_path, patience=1)
    resumed.on_resume(step=10)
    assert resumed(_Exportable())["best_val_accuracy"] == 0.7 and resumed.should_stop
    assert resumed.pending_export() is None
    assert json.loads((tmp_path / "best.json").read_text()) == {"val_accuracy": 0.7}


def _launch(args, tmp_path, launcher=True):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes=1", "--cpu"] if launcher else [sys.executable]
    command = [*launch, "scripts/finetune_classification.py"]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_finetune_script_end_to_end(tiny_checkpoint, tmp_path):
    folder, _ = tiny_checkpoint
    train_file = write_rows(tmp_path / "train.csv", sentiment_rows())
    test_file = write_rows(tmp_path / "test.csv", sentiment_rows(1))
    out = tmp_path / "run"
    args = [
        f"--model.checkpoint={folder}", f"--data.train={train_file}", f"--data.test={test_file}", "--data.text_column=review",
        "--data.label_column=stars", "--data.label_names=negative,positive", "--data.validation_fraction=0.25",
        f"--train.output_dir={out}", "--train.max_steps=4", "--train.batch_size=8", "--train.eval_every=2",
        "--train.cpu_threads=1", "--data.max_train_examples=40",
    ]
    result = _launch(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"validation", "test"} and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert json.loads(result.stdout.strip().splitlines()[-1]) == metrics
    assert (out / "confusion_matrix.png").stat().st_size > 0 and (out / "predictions_test.csv").is_file()
    for kept in ("final", "best"):
        model = AutoModelForSequenceClassification.from_pretrained(out / kept)
        assert model.config.id2label == {0: "negative", 1: "positive"}
    classify = pipeline("text-classification", model=str(out / "best"))
    assert classify("a fine film")[0]["label"] in {"negative", "positive"}


def test_finetune_script_names_the_columns_that_exist(tiny_checkpoint, tmp_path):
    folder, _ = tiny_checkpoint
    train_file = write_rows(tmp_path / "train.csv", sentiment_rows())
    args = [f"--model.checkpoint={folder}", f"--data.train={train_file}", f"--train.output_dir={tmp_path}"]
    result = _launch(args, tmp_path, launcher=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {train_file} has no column 'text'; its columns are review, stars "
        f"(set --data.text_column, --data.text_pair_column or --data.label_column)"
    )
