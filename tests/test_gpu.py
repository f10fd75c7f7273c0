"""What only a CUDA GPU can check: bf16 autocast steps, pinned batches, inductor compile (skipped without CUDA).

``python benchmarks/gpu_check.py`` runs these first (``pytest -m gpu``).
"""

from __future__ import annotations

import math

import pytest
import torch
from accelerate.state import AcceleratorState

import nlpssl.steps
from nlpssl.data.collators import MLMCollator
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.sampling import make_loader
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, tiny_blocks, train_losses

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def setup():
    return tiny_blocks(20)


def _train(setup, output_dir, steps: int = 4, **options):
    tokenizer, blocks = setup
    AcceleratorState._reset_state()  # another precision than the previous run's in this process
    torch.manual_seed(0)
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    seen = []
    objective.model.bert.encoder.layer[0].attention.self.query.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    cfg = TrainConfig(output_dir=str(output_dir), max_steps=steps, batch_size=8, log_every=1, save_every=100, warmup_steps=1, **options)
    trained = train(objective, blocks, MLMCollator(tokenizer), cfg, tokenizer=tokenizer)
    return trained, seen


def test_bf16_training_steps_run_in_bf16_and_track_fp32(setup, tmp_path):
    trained, dtypes = _train(setup, tmp_path / "bf16", precision="bf16")
    assert next(trained.parameters()).device.type == "cuda"
    assert set(dtypes) == {torch.bfloat16}  # autocast: matmuls in bf16, master weights fp32
    assert next(trained.parameters()).dtype == torch.float32
    _train(setup, tmp_path / "fp32")
    bf16, fp32 = train_losses(tmp_path / "bf16"), train_losses(tmp_path / "fp32")
    assert all(math.isfinite(loss) for _, loss in bf16)
    for (_, expected), (_, got) in zip(fp32, bf16):
        assert got == pytest.approx(expected, rel=2e-2)


def test_batches_are_pinned_and_copied_without_blocking(setup):
    tokenizer, blocks = setup
    loader = make_loader(blocks, MLMCollator(tokenizer), 8, rank=0, world_size=1, seed=0, pin_memory=True)
    batch = next(iter(loader))
    assert all(value.is_pinned() for value in batch.values() if isinstance(value, torch.Tensor))
    on_gpu = nlpssl.steps._to_device(batch, torch.device("cuda"))
    torch.cuda.synchronize()
    assert all(value.is_cuda for value in on_gpu.values() if isinstance(value, torch.Tensor))
    assert torch.equal(on_gpu["input_ids"].cpu(), batch["input_ids"])


def test_inductor_compiled_objective_trains_like_eager(setup, tmp_path):
    _train(setup, tmp_path / "compiled", steps=2, compile=True)
    _train(setup, tmp_path / "eager", steps=2)
    for (_, expected), (_, got) in zip(train_losses(tmp_path / "eager"), train_losses(tmp_path / "compiled")):
        assert got == pytest.approx(expected, rel=1e-3)
