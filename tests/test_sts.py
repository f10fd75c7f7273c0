"""STS readers (counts from shared/data/README.md), user-file errors, encode, Spearman, parity with sentence-transformers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from nlpssl.data.sts import STS_TASKS, load_task, read_scored_pairs, read_senteval_sts, read_sickr, read_stsb
from nlpssl.errors import UserError
from nlpssl.evaluation import sts
from nlpssl.evaluation.sts import encode, evaluate_sts, score_pairs, spearman_cosine
from nlpssl.models.sentence_folder import folder_pooling

REPO = Path(__file__).resolve().parents[1]
PARITY_PAIRS = 300  # the full STS-B test (1379 pairs) takes ~45 s per model on 2 shared cores


@pytest.fixture(autouse=True, scope="module")
def _one_thread(one_torch_thread):
    """Run this module's tests on one torch thread (see conftest)."""


@pytest.fixture(scope="module")
def minilm(minilm_path):
    from transformers import AutoModel, AutoTokenizer

    return AutoModel.from_pretrained(minilm_path), AutoTokenizer.from_pretrained(minilm_path)


def test_stsb_and_sick_counts_match_the_data_readme(shared_data):
    assert [len(read_stsb(shared_data, split)) for split in ("train", "dev", "test")] == [5749, 1500, 1379]
    first = read_stsb(shared_data, "test")[0]
    assert first == ("A girl is styling her hair.", "A girl is brushing her hair.", 2.5)
    sick = read_sickr(shared_data, "test")
    assert len(sick) == 4927 and all(1 <= score <= 5 for _, _, score in sick)


@pytest.mark.parametrize(("task", "count"), [("sts12", 3108), ("sts13", 1500), ("sts14", 3750), ("sts15", 3000), ("sts16", 1186)])
def test_senteval_years_skip_unscored_pairs_and_pool_all_subsets(shared_data, task, count):
    pairs = load_task(shared_data, task)
    assert len(pairs) == count
    assert all(first and second and 0 <= score <= 5 for first, second, score in pairs)
    assert sum(map(len, read_senteval_sts(shared_data, task).values())) == count


def test_user_pairs_file_by_header_names_and_by_index(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("id\tq\td\tlabel\n1\tA cat.\tA dog.\t0.25\n\n2\t  Hello  \tHi\t1\n")
    assert read_scored_pairs(path, "q", "d", "label", score_range=(0, 1)) == [("A cat.", "A dog.", 0.25), ("Hello", "Hi", 1.0)]
    headerless = tmp_path / "pairs.csv"
    headerless.write_text('"A cat, sitting.",A dog.,3\n')
    assert read_scored_pairs(headerless, 0, 1, 2) == [("A cat, sitting.", "A dog.", 3.0)]


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (None, {}, "pairs file .* not found"),
        ("s1,s2,score\na,b,1\n", {}, r"no column 'sentence1', 'sentence2' \(header: s1, s2, score\)"),
        ("sentence1,sentence2,score\na,b,1\nc,d,7\n", {"score_range": (0, 5)}, "line 3: score 7.0 is outside the declared range 0 to 5"),
        ("sentence1,sentence2,score\na, ,1\n", {}, "line 2 has an empty sentence"),
        ("sentence1,sentence2,score\na,b,high\n", {}, "line 2: score 'high' is not a number"),
        ("sentence1,sentence2,score\n", {}, "has no scored pairs"),
    ],
)
def test_user_pairs_file_errors_are_one_line(tmp_path, content, kwargs, message):
    path = tmp_path / "pairs.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(UserError, match=message) as error:
        read_scored_pairs(path, **kwargs)
    assert "\n" not in str(error.value)


def test_spearman_cosine_is_plus_or_minus_100_for_monotone_similarity():
    angles = torch.linspace(0, 1.5, 10)
    emb1 = torch.stack([torch.ones(10), torch.zeros(10)], 1)  # (P, 2)
    emb2 = torch.stack([torch.cos(angles), torch.sin(angles)], 1)  # cosine falls with the angle
    assert spearman_cosine(emb1, emb2, -angles) == pytest.approx(100)
    assert spearman_cosine(emb1, emb2, angles.tolist()) == pytest.approx(-100)


def test_encode_restores_input_order_and_training_mode(minilm):
    model, tokenizer = minilm
    sentences = ["Short.", "A much longer sentence about a dog running in a park.", "Mid length one here.", "Hi"]
    model.train()
    batched = encode(model, tokenizer, sentences, pooling="mean", batch_size=3)  # (N, D)
    assert model.training and batched.shape == (4, model.config.hidden_size) and not batched.is_inference()
    one_by_one = torch.cat([encode(model, tokenizer, [s], pooling="mean") for s in sentences])
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=1e-4)
    cls = encode(model, tokenizer, sentences, pooling="cls")
    assert cls.shape == batched.shape and not torch.allclose(cls, batched)


def test_stsb_test_spearman_matches_sentence_transformers(shared_data, minilm, minilm_path):
    from sentence_transformers import SentenceTransformer

    pairs = read_stsb(shared_data, "test")[:PARITY_PAIRS]
    model, tokenizer = minilm
    ours = score_pairs(model, tokenizer, pairs, pooling=folder_pooling(minilm_path))
    reference = SentenceTransformer(str(minilm_path), device="cpu")
    first = reference.encode([p[0] for p in pairs], batch_size=64)
    second = reference.encode([p[1] for p in pairs], batch_size=64)
    cosine = (first * second).sum(1) / np.linalg.norm(first, axis=1) / np.linalg.norm(second, axis=1)
    theirs = spearmanr(cosine, [p[2] for p in pairs]).statistic * 100
    assert ours == pytest.approx(theirs, abs=0.2)
    assert ours > 70  # a real sentence embedding model, not noise


def test_avg_is_the_mean_of_the_seven_simcse_tasks(tmp_path, monkeypatch):
    scores = {"stsb_dev": 99.0, "stsb_test": 80.0, "sts12": 70.0, "sts13": 71.0, "sts14": 72.0, "sts15": 73.0, "sts16": 74.0, "sickr": 75.0}
    monkeypatch.setattr(sts, "load_task", lambda data_dir, task: task)
    monkeypatch.setattr(sts, "score_pairs", lambda model, tokenizer, task, pooling, **kwargs: scores[task])
    results = evaluate_sts(None, None, tmp_path, "mean")
    assert list(results) == [*STS_TASKS, "avg"]
    assert results["avg"] == pytest.approx(sum(v for k, v in scores.items() if k != "stsb_dev") / 7)
    assert evaluate_sts(None, None, tmp_path, "mean", tasks=["stsb_test"]) == {"stsb_test": 80.0, "avg": None}
    with pytest.raises(UserError, match="unknown STS task sts17"):
        evaluate_sts(None, None, tmp_path, "mean", tasks=["sts17"])
    with pytest.raises(UserError, match="STS data folder .* not found"):
        evaluate_sts(None, None, tmp_path / "absent", "mean")


def run_script(*args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "scripts/evaluate_sts.py", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_script_on_one_small_task_ends_with_a_json_line(tmp_path, shared_data, minilm, minilm_path):
    (tmp_path / "stsb").mkdir()
    rows = (shared_data / "stsb" / "stsb-en-test.csv").read_text().splitlines()[:20]
    (tmp_path / "stsb" / "stsb-en-test.csv").write_text("\n".join(rows) + "\n")
    result = run_script(str(minilm_path), "--tasks", "stsb_test", "--data-dir", str(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "pooling mean" in result.stdout
    last = json.loads(result.stdout.strip().splitlines()[-1])
    model, tokenizer = minilm
    expected = score_pairs(model, tokenizer, read_stsb(tmp_path, "test"), "mean")
    assert last == {"stsb_test": round(expected, 2), "avg": None}


@pytest.fixture
def script():
    """scripts/evaluate_sts.py imported in-process: a second subprocess would only re-pay the imports."""
    spec = importlib.util.spec_from_file_location("evaluate_sts_script", REPO / "scripts" / "evaluate_sts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_on_a_headerless_pairs_file_by_column_index(tmp_path, script, capsys, shared_data, minilm, minilm_path):
    rows = (shared_data / "stsb" / "stsb-en-dev.csv").read_text().splitlines()[:12]
    pairs_file = tmp_path / "pairs.csv"
    pairs_file.write_text("\n".join(rows) + "\n")
    script.main([str(minilm_path), "--pairs", str(pairs_file), "--sentence1-column", "0", "--sentence2-column", "1", "--score-column", "2"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, tokenizer = minilm
    assert last == {"pairs": round(score_pairs(model, tokenizer, read_scored_pairs(pairs_file, 0, 1, 2), "mean"), 2)}


def test_script_without_a_tokenizer_is_a_one_line_user_error(tmp_path, script, capsys):
    from transformers import BertConfig, BertModel

    # a model saved without its tokenizer: transformers 5 would quietly build an all-[UNK] one
    BertModel(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)).save_pretrained(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        script.main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {tmp_path} has no tokenizer " + (
        "(tokenizer.json, vocab.txt, vocab.json, spiece.model, sentencepiece.bpe.model, tokenizer.model); save the tokenizer with the model"
    )
