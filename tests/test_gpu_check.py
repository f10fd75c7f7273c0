"""benchmarks/gpu_check.py works before a GPU is ever lent: tiny mode on CPU, its JSON line, its FLOP and peak arithmetic."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check  # noqa: E402


@pytest.mark.slow
def test_tiny_mode_runs_on_cpu_and_ends_with_one_json_line():
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--tiny"], cwd=REPO, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["benchmark"] == "gpu_check" and result["tiny"] and result["precision"] == "fp32"
    assert result["nlpssl_tokens_per_s"] > 0 and result["hf_tokens_per_s"] > 0
    tests = result["tests"]
    assert tests["exit_status"] == 0 and tests["tests"] >= 3 and tests["failures"] == tests["errors"] == 0
    if not torch.cuda.is_available():
        assert tests["skipped"] == tests["tests"]  # the gpu marker skips them here
        assert result["fsdp"].startswith("skipped") and result["deepspeed_zero2"].startswith("skipped")
        assert result["nlpssl_mfu"] is None  # no peak for a CPU


def test_the_nested_gpu_run_collects_only_the_modules_that_mark_gpu_tests():
    files = gpu_check.gpu_test_files()
    assert "tests/test_gpu.py" in files and "tests/test_train.py" not in files
    assert all("mark.gpu" in (REPO / name).read_text() for name in files)


@pytest.mark.parametrize(
    "name, peak",
    [("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0), ("NVIDIA H200", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0),
     ("NVIDIA L4", 121.0), ("NVIDIA L40S", 362.0), ("Tesla T4", None)],
)
def test_peak_bf16_by_device_name(name, peak):
    assert gpu_check.peak_tflops(name) == peak


def test_flops_per_token_count_every_weight_matrix_of_bert_base():
    config = BertConfig(vocab_size=30_522)  # BERT-base: 12 x 768, feed-forward 3072
    with torch.device("meta"):
        model = BertForMaskedLM(config)
    matrices = {name: p for name, p in model.named_parameters() if p.dim() == 2 and "embeddings" not in name}
    weights = sum(p.numel() for p in matrices.values()) + config.vocab_size * config.hidden_size  # + the tied decoder
    attention = 12 * config.num_hidden_layers * config.hidden_size * 128
    assert gpu_check.training_flops_per_token(config, 128) == 6 * weights + attention
    assert 6.5e8 < gpu_check.training_flops_per_token(config, 128) < 6.9e8  # ~0.67 GFLOP per token
