import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, BertConfig, BertModel

from nlpssl.data.pairs import SentenceViewsCollator, load_sentence_tuples, split_sentences
from nlpssl.errors import UserError
from nlpssl.evaluation.sts import encode
from nlpssl.losses import info_nce
from nlpssl.models.heads import pool
from nlpssl.models.sentence_folder import folder_pooling
from nlpssl.objectives.simcse import SimCSE
from nlpssl.models.text import TransformerDims, dropout_restored, encoder_config
from nlpssl.recipes.simcse import SIMCSE_DROPOUT, SentenceModelConfig, load_simcse_encoder
from tests.helpers import bible_subset, free_port, tiny_wordpiece

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_encoder_dir(tmp_path_factory):
    """A tiny BERT encoder folder with its tokenizer, like a user's checkpoint."""
    folder = tmp_path_factory.mktemp("tiny_bert")
    tokenizer = tiny_wordpiece(bible_subset(60)["text"])
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _objective(folder, method="mean", views=2):
    encoder, tokenizer, pooler = load_simcse_encoder(SentenceModelConfig(checkpoint=str(folder), pooler=method))
    return SimCSE(encoder, pooler, num_views=views, gather=False), tokenizer


def test_collator_stacks_views_view_major(tiny_encoder_dir):
    _, tokenizer = _objective(tiny_encoder_dir)
    rows = [{"a": "in the beginning", "b": "god created", "c": "the earth"}, {"a": "light", "b": "darkness", "c": "waters"}]
    batch = SentenceViewsCollator(tokenizer, ["a", "b", "c"])(rows)
    assert batch["input_ids"].shape[0] == 6
    assert tokenizer.decode(batch["input_ids"][1], skip_special_tokens=True) == "light"
    assert tokenizer.decode(batch["input_ids"][2], skip_special_tokens=True) == "god created"
    twice = SentenceViewsCollator(tokenizer, ["a"], repeat=2)(rows)
    assert torch.equal(twice["input_ids"][:2], twice["input_ids"][2:])


def test_loss_is_info_nce_of_pooled_views(tiny_encoder_dir):
    objective, tokenizer = _objective(tiny_encoder_dir, views=3)
    objective.eval()
    rows = [{"a": f"sentence number {i}", "b": f"another {i}", "c": f"negative {i}"} for i in range(4)]
    batch = SentenceViewsCollator(tokenizer, ["a", "b", "c"])(rows)
    loss = objective(batch)["loss"]
    hidden = objective.encoder(**batch).last_hidden_state
    z = pool(hidden, batch["attention_mask"], "mean")
    expected = info_nce(z[:4], z[4:8], 0.05, negatives=z[8:])
    torch.testing.assert_close(loss, expected)


def test_dropout_views_differ_in_training(tiny_encoder_dir):
    objective, tokenizer = _objective(tiny_encoder_dir)
    objective.train()
    batch = SentenceViewsCollator(tokenizer, ["text"], repeat=2)([{"text": "in the beginning god created"}] * 2)
    hidden = objective.encoder(**batch).last_hidden_state
    assert not torch.allclose(hidden[0], hidden[2])


def test_a_model_saved_without_dropout_trains_with_simcse_dropout(tmp_path):
    """nlpssl's MLM recipes save ModernBERTs with dropout 0: SimCSE's two views must still differ."""
    tokenizer = tiny_wordpiece(bible_subset(60)["text"])
    dims = TransformerDims(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=128, dropout=0.0)
    AutoModel.from_config(encoder_config("modernbert", dims, tokenizer)).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    objective, tokenizer = _objective(tmp_path)
    assert objective.encoder.config.mlp_dropout == objective.encoder.config.attention_dropout == SIMCSE_DROPOUT
    objective.train()
    batch = SentenceViewsCollator(tokenizer, ["text"], repeat=2)([{"text": "in the beginning god created"}] * 2)
    hidden = objective.encoder(**batch).last_hidden_state
    assert not torch.allclose(hidden[0], hidden[2])


def test_a_model_with_its_own_dropout_keeps_it(tiny_encoder_dir):
    config = BertConfig.from_pretrained(tiny_encoder_dir)
    assert dropout_restored(config, 0.3) == {}
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    assert dropout_restored(config, 0.3) == {"hidden_dropout_prob": 0.3, "attention_probs_dropout_prob": 0.3}


@pytest.mark.parametrize("method", ["mean", "cls", "cls_before_pooler"])
def test_export_loads_in_sentence_transformers_with_trained_pooling(tiny_encoder_dir, tmp_path, method):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    objective, tokenizer = _objective(tiny_encoder_dir, method)
    objective.export(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    texts = ["in the beginning god created the heavens", "light"]
    ours_batch = tokenizer(texts, padding=True, return_tensors="pt")
    objective.eval()
    with torch.no_grad():
        ours = objective.embed(objective.encoder(**ours_batch).last_hidden_state, ours_batch["attention_mask"])
    theirs = sentence_transformers.SentenceTransformer(str(tmp_path), device="cpu").encode(texts, convert_to_tensor=True)
    torch.testing.assert_close(theirs, ours, rtol=1e-4, atol=1e-5)
    # What scripts/evaluate_sts.py --pooling auto computes from the folder alone.
    auto = encode(AutoModel.from_pretrained(tmp_path), tokenizer, texts, pooling=folder_pooling(tmp_path))
    torch.testing.assert_close(auto, ours, rtol=1e-4, atol=1e-5)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    if method == "cls":  # the trained MLP also lives in BERT's pooler: pooler_output is the embedding
        with torch.no_grad():
            torch.testing.assert_close(reloaded(**ours_batch).pooler_output, ours, rtol=1e-4, atol=1e-5)


def test_folder_without_tokenizer_is_a_user_error(tiny_encoder_dir, tmp_path):
    AutoModel.from_pretrained(tiny_encoder_dir).save_pretrained(tmp_path)
    with pytest.raises(UserError, match="has no tokenizer"):
        load_simcse_encoder(SentenceModelConfig(checkpoint=str(tmp_path)))


def test_pair_file_errors(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text("sent0,sent1\na cat,a feline\n")
    with pytest.raises(UserError, match="no column 'hard_neg'; its columns are sent0, sent1"):
        load_sentence_tuples(str(path), ["sent0", "sent1", "hard_neg"])
    path.write_text('sent0,sent1\na cat,a feline\nthe dog,""\n')
    with pytest.raises(UserError, match="1 empty sentence.*column 'sent1', first at data row 2"):
        load_sentence_tuples(str(path), ["sent0", "sent1"])


def test_split_sentences():
    corpus = bible_subset(1)
    sentences = split_sentences(corpus)["text"]
    assert sentences[0] == "In the beginning God created the heavens and the earth."
    assert len(sentences) > 20


def _launch(*args, config=None):
    launcher = [sys.executable, "-m", "accelerate.commands.launch"]
    # A free port, not the default 29500, which another run on this machine may hold.
    launcher += ["--config_file", str(config), "--main_process_port", str(free_port())] if config else ["--num_processes=1", "--cpu"]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([*launcher, "scripts/train_simcse.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_train_simcse_smoke_saves_sentence_transformers_folder(tiny_encoder_dir, tmp_path):
    sentence_transformers = pytest.importorskip("sentence_transformers")
    out = tmp_path / "simcse"
    common = [f"--model.checkpoint={tiny_encoder_dir}", "--data.max_sentences=64", "--simcse.stsb_dir=none"]
    result = _launch(*common, "--train.max_steps=2", "--train.batch_size=8", f"--train.output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    vectors = sentence_transformers.SentenceTransformer(str(out / "final"), device="cpu").encode(["a sentence"])
    assert vectors.shape == (1, 32)


def test_train_simcse_on_two_processes_and_bad_batch(tiny_encoder_dir, tmp_path):
    config = REPO / "configs" / "accelerate" / "cpu_2proc.yaml"
    common = [f"--model.checkpoint={tiny_encoder_dir}", "--data.max_sentences=64", "--simcse.stsb_dir=none"]
    result = _launch(*common, "--train.max_steps=2", "--train.batch_size=4", f"--train.output_dir={tmp_path / 'ddp'}", config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "ddp" / "final" / "modules.json").is_file()
    # Plain python: `accelerate launch` adds its own traceback when a child exits non-zero.
    env = os.environ | {"PYTHONPATH": str(REPO)}
    command = [sys.executable, "scripts/train_simcse.py", *common, "--train.batch_size=1", f"--train.output_dir={tmp_path / 'bad'}"]
    bad = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "at least 2" in bad.stderr and "Traceback" not in bad.stderr
