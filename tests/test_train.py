import contextlib
import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from accelerate.utils import DistributedType
import torch
from accelerate import Accelerator
from torch import nn

import nlpssl.train
from nlpssl.checkpoints import (
    complete_checkpoints, completes_checkpoints, find_resume_point, load_checkpoint, newest_common_step, save_checkpoint,
)
from nlpssl.data.collators import MLMCollator
from nlpssl.errors import UserError
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.optim import make_optimizer, parameter_groups
from nlpssl.train import TrainConfig, train
from nlpssl.objectives.base import Objective, sub_state_dict
from tests.helpers import TINY_DIMS, accelerator_rank, read_metrics, run_gloo_ranks, tiny_blocks, train_losses


@pytest.fixture(scope="module")
def setup():
    return tiny_blocks(40)


def _run(setup, output_dir, max_steps, init_seed=0, **options):
    tokenizer, blocks = setup
    torch.manual_seed(init_seed)
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    defaults = dict(batch_size=4, grad_accum_steps=2, log_every=1, save_every=3, eval_every=3, eval_batches=2, warmup_steps=2)
    cfg = TrainConfig(output_dir=str(output_dir), max_steps=max_steps, **(defaults | options))
    return train(objective, blocks, MLMCollator(tokenizer), cfg, eval_dataset=blocks, tokenizer=tokenizer)


def test_resume_reproduces_every_step(setup, tmp_path):
    _run(setup, tmp_path / "straight", 6)
    _run(setup, tmp_path / "resumed", 3)
    # The second process starts from another init and another global RNG state:
    # only a real restore of weights, optimizer, RNG and data position can match.
    torch.manual_seed(999)
    _run(setup, tmp_path / "resumed", 6, init_seed=123, resume="auto")
    straight, resumed = train_losses(tmp_path / "straight"), train_losses(tmp_path / "resumed")
    assert [s for s, _ in straight] == [1, 2, 3, 4, 5, 6]
    assert straight == resumed
    fresh = tmp_path / "fresh"
    _run(setup, fresh, 3, init_seed=123)
    assert train_losses(fresh)[0] != straight[0], "the control run must differ, or the test proves nothing"


def test_metrics_and_outputs(setup, tmp_path):
    _run(setup, tmp_path, 6)
    records = read_metrics(tmp_path)
    train_records = [r for r in records if "loss" in r]
    assert {"step", "loss", "lr", "tokens_per_s"} <= set(train_records[0])
    evals = [r for r in records if "eval_loss" in r]
    assert [r["step"] for r in evals] == [3, 6]
    assert math.isclose(evals[0]["eval_perplexity"], math.exp(evals[0]["eval_loss"]), rel_tol=1e-9)
    assert (tmp_path / "final" / "config.json").is_file() and (tmp_path / "final" / "tokenizer.json").is_file()
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000003", "step_000006"]
    assert (tmp_path / "checkpoints" / "step_000003" / "model" / "model.safetensors").is_file()


def test_a_fresh_start_in_a_folder_holding_a_run_is_refused_and_loses_nothing(setup, tmp_path):
    _run(setup, tmp_path, 3, eval_every=100)
    before = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(UserError, match=r"already holds a run \(metrics.jsonl, checkpoints/, final/\).*train.resume='auto'"):
        _run(setup, tmp_path, 3, eval_every=100)
    assert (tmp_path / "metrics.jsonl").read_text() == before and [r["step"] for r in read_metrics(tmp_path)][0] == 1
    _run(setup, tmp_path, 2, eval_every=100, overwrite=True)  # starting over is one option away
    assert max(r["step"] for r in read_metrics(tmp_path)) == 2


def test_keeps_only_the_newest_checkpoints(setup, tmp_path):
    _run(setup, tmp_path, 10, save_every=2, keep_checkpoints=2, eval_every=100)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["step_000008", "step_000010"]


def test_partial_checkpoint_is_ignored(setup, tmp_path):
    _run(setup, tmp_path, 3)
    crashed = tmp_path / "checkpoints" / "step_000009.tmp"
    crashed.mkdir()
    (crashed / "trainer_state.json").write_text(json.dumps({"step": 9}))
    assert find_resume_point(tmp_path, "auto").name == "step_000003"
    with pytest.raises(UserError, match="not a complete checkpoint"):
        find_resume_point(tmp_path, str(tmp_path / "checkpoints" / "step_000007"))


def test_optimizer_steps_with_warmup_then_cosine_at_every_step_the_loop_runs(setup, tmp_path, monkeypatch):
    """The rate AdamW actually steps with, at each of the 6 steps run (warmup 2, peak 5e-4, floor 5e-5)."""
    applied = []
    adamw_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        applied.append(self.param_groups[0]["lr"])
        return adamw_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    _run(setup, tmp_path, 6, lr=5e-4, warmup_steps=2, min_lr_ratio=0.1)
    floor, span = 5e-5, 5e-4 - 5e-5
    cosine = [floor + span * 0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(4)]  # 4 steps after warmup
    expected = [2.5e-4, 5e-4, *cosine]  # [2.5e-4, 5e-4, 5e-4, 4.34e-4, 2.75e-4, 1.16e-4]
    assert applied == pytest.approx(expected)
    logged = [(r["step"], r["lr"]) for r in read_metrics(tmp_path) if "lr" in r]
    assert logged == [(step, pytest.approx(lr)) for step, lr in zip(range(1, 7), expected)]


def test_weight_decay_by_rank(setup):
    tokenizer, _ = setup
    model = build_mlm_model(tokenizer, TINY_DIMS)
    decayed, plain = parameter_groups(model, 0.01)
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert plain["weight_decay"] == 0.0
    total = sum(1 for p in model.parameters())
    assert len(decayed["params"]) + len(plain["params"]) == total


def test_sgd_is_momentum_sgd_with_l2_decay_on_matrices_only():
    torch.manual_seed(0)
    layer = torch.nn.Linear(3, 2)
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    optimizer = make_optimizer(layer, lr=0.1, weight_decay=0.01, name="sgd", momentum=0.9)
    inputs = torch.randn(4, 3)
    velocity_w, velocity_b = torch.zeros_like(weight), torch.zeros_like(bias)
    for _ in range(2):
        optimizer.zero_grad()
        layer(inputs).square().sum().backward()
        with torch.no_grad():  # the same step by hand: v = 0.9 v + (g + decay * w); w -= lr * v
            velocity_w = 0.9 * velocity_w + layer.weight.grad + 0.01 * weight
            velocity_b = 0.9 * velocity_b + layer.bias.grad  # biases are not decayed
            weight, bias = weight - 0.1 * velocity_w, bias - 0.1 * velocity_b
        optimizer.step()
        assert torch.allclose(layer.weight, weight, atol=1e-6) and torch.allclose(layer.bias, bias, atol=1e-6)
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        make_optimizer(layer, lr=0.1, weight_decay=0.0, name="lamb")


def test_validation_smaller_than_a_batch_fails_before_training(setup, tmp_path):
    tokenizer, blocks = setup
    objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    cfg = TrainConfig(output_dir=str(tmp_path), max_steps=2, batch_size=4)
    with pytest.raises(UserError, match="validation set has 3 rows"):
        train(objective, blocks, MLMCollator(tokenizer), cfg, eval_dataset=blocks.select(range(3)))
    assert not (tmp_path / "metrics.jsonl").exists()


def test_dataset_smaller_than_a_batch(setup, tmp_path):
    tokenizer, blocks = setup
    with pytest.raises(UserError, match="fewer than one global batch"):
        _run((tokenizer, blocks.select(range(3))), tmp_path, 2)


# ---- fp16 updates the loss scaler skipped ----


def test_skipped_fp16_update_is_not_a_step_and_resume_stays_exact(setup, tmp_path, monkeypatch):
    """The scaler's verdict is mocked: the 2nd update of 5 'overflows'; 4 steps are counted, logged and saved."""
    from nlpssl.optim import learning_rate

    attempts, progress = [], []
    on_step = MaskedLM.on_optimizer_step

    def skipped(accelerator) -> bool:
        attempts.append(len(attempts) + 1)
        return len(attempts) == 2

    def recording_on_step(self, fraction):
        progress.append(fraction)
        on_step(self, fraction)

    straight = tmp_path / "straight"
    with monkeypatch.context() as patch:
        patch.setattr(Accelerator, "optimizer_step_was_skipped", property(skipped))
        patch.setattr(MaskedLM, "on_optimizer_step", recording_on_step)
        _run(setup, straight, 4, eval_every=100)  # 2 micro-batches per step, checkpoints at 3 and 4
    records = [r for r in read_metrics(straight) if "loss" in r]
    assert len(attempts) == 5 and [r["step"] for r in records] == [1, 2, 3, 4]
    assert progress == pytest.approx([0.25, 0.5, 0.75, 1.0])  # teachers and queues hear of real updates only
    assert records[1]["skipped_steps"] == 1 and all("skipped_steps" not in r for r in records[2:])
    rates = [learning_rate(step, 5e-4, 2, 4, 0.1) for step in range(4)]  # the skipped attempt's rate is retried
    assert [r["lr"] for r in records] == pytest.approx(rates)
    state = json.loads((straight / "checkpoints" / "step_000003" / "trainer_state.json").read_text())
    assert state == {"step": 3, "micro_step": 8}  # 4 attempts x 2 micro-batches: the data position, not 2 x step
    # Resume from step 3 without the skip: the data position must come from the checkpoint, not 2 x step.
    resumed = tmp_path / "resumed"
    shutil.copytree(straight / "checkpoints" / "step_000003", resumed / "checkpoints" / "step_000003")
    torch.manual_seed(999)
    _run(setup, resumed, 4, init_seed=123, resume="auto", eval_every=100)
    assert train_losses(resumed) == train_losses(straight)[3:]


# ---- the loop on a device it cannot read: counts stay there, nothing comes back per step ----


class _MetaRegression(Objective):
    """Least squares on the "meta" device, whose counts come back on the CPU (as two objectives' did)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 1, device="meta")

    def forward(self, batch: dict) -> dict:
        loss = (self.linear(batch["x"]).squeeze(-1) - batch["y"]).pow(2).mean()  # (B, 4) -> ()
        return {"loss": loss, "num_tokens": torch.tensor(batch["x"].shape[0])}

    def count_targets(self, batch: dict) -> torch.Tensor:
        return torch.tensor(batch["y"].shape[0])


class _MetaAccelerator(SimpleNamespace):
    """Enough of an Accelerator for one process on "meta": any read of a value (.item(), float(), .tolist()) raises."""

    device, num_processes, process_index, is_main_process = torch.device("meta"), 1, 0, True
    optimizer_step_was_skipped, scaler = False, None
    distributed_type = DistributedType.NO

    def unwrap_model(self, model):
        return model

    def no_sync(self, model):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def reduce(self, tensor, reduction):
        return tensor

    def clip_grad_norm_(self, parameters, max_norm):
        return torch.nn.utils.clip_grad_norm_(parameters, max_norm)


def _meta_batch(rows: int) -> dict:
    return {"x": torch.empty(rows, 4, device="meta"), "y": torch.empty(rows, device="meta")}


def test_loop_steps_read_back_only_the_step_check_and_keep_every_count_on_the_device(tmp_path, monkeypatch):
    """The one read of an optimizer step is check_step's (finite? stop?); stood in for here, as "meta" cannot be read."""
    checks = []

    def unread_check(accelerator, loss_sum, grad_norm, stop_requested):
        checks.append((loss_sum.device.type, grad_norm.device.type))
        return nlpssl.train.StepCheck(True, True, False)

    monkeypatch.setattr(nlpssl.train, "check_step", unread_check)
    objective, accelerator = _MetaRegression(), _MetaAccelerator()
    optimizer = torch.optim.SGD(objective.parameters(), lr=0.1)
    loop = nlpssl.train._Loop(accelerator, objective, optimizer, TrainConfig(grad_accum_steps=3), tmp_path, None, None)
    for _ in range(2):  # a read per micro-step (the old loss.item()) would raise here
        totals = loop._optimizer_step([_meta_batch(2), _meta_batch(3), _meta_batch(1)], progress=0.5).totals
        assert {t.device.type for t in totals} == {"meta"} and totals.targets.shape == ()
    assert checks == [("meta", "meta")] * 2  # one check per optimizer step, of values still on the device
    evaluation = nlpssl.train.evaluation_totals(objective, [_meta_batch(2), _meta_batch(3)], accelerator.device)
    assert evaluation.device.type == "meta" and evaluation.shape == (2,)  # stacked with a CPU count before


def test_batches_are_pinned_for_cuda_only(tmp_path):
    for device, pinned in (("cuda", True), ("cpu", False), ("mps", False)):
        accelerator = SimpleNamespace(device=torch.device(device), process_index=0, num_processes=1, unwrap_model=lambda m: m)
        loop = nlpssl.train._Loop(accelerator, _MetaRegression(), None, TrainConfig(batch_size=2), tmp_path, None, None)
        assert loop._loader(list(range(8)), lambda rows, generator: rows, start_micro_step=0).pin_memory is pinned


# ---- checkpoints on nodes without a shared filesystem ----


class _Linear(Objective):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 2)

    def export(self, directory: Path, state_dict: dict | None = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        torch.save(sub_state_dict(state_dict, "linear") or self.linear.state_dict(), directory / "linear.pt")


def _two_nodes_worker(rank: int, port: int, out_dir: str) -> None:
    """Two processes, each the local main of its own node; first one folder each (no shared filesystem), then one folder."""
    with accelerator_rank(rank, 2, port, processes_per_node=1) as accelerator:
        torch.manual_seed(0)
        model = accelerator.prepare(_Linear())
        results = {}
        for case in ("separate", "shared"):
            folder = Path(out_dir) / (f"{case}{rank}" if case == "separate" else case)
            writer = completes_checkpoints(accelerator, folder / "checkpoints")
            for step in (1, 2, 3):
                save_checkpoint(accelerator, model, folder, step, keep=2, micro_step=2 * step)
            complete = [p.name for p in complete_checkpoints(folder)]
            files = sorted(p.name for p in (folder / "checkpoints" / "step_000003").iterdir())
            accelerator.wait_for_everyone()
            if case == "separate" and rank == 1:  # node 1 crashed before completing step 3
                (folder / "checkpoints" / "step_000003").rename(folder / "checkpoints" / "step_000003.tmp")
            accelerator.wait_for_everyone()
            resume = find_resume_point(folder, "auto")
            results[case] = {"writer": writer, "complete": complete, "files": files, "resume": resume.name, "state": load_checkpoint(accelerator, resume)}
            accelerator.wait_for_everyone()
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")


def test_checkpoints_are_completed_on_each_node_without_a_shared_filesystem(tmp_path):
    ranks = run_gloo_ranks(_two_nodes_worker, 2, tmp_path, "fork")
    separate = [r["separate"] for r in ranks]
    assert [r["writer"] for r in separate] == [True, True]  # node 1 cannot see node 0's files: it completes its own
    for rank, result in enumerate(separate):
        assert result["complete"] == ["step_000002", "step_000003"]
        assert {"model.safetensors", "model", "trainer_state.json", f"random_states_{rank}.pkl"} <= set(result["files"])
        assert result["resume"] == "step_000002" and result["state"] == {"step": 2, "micro_step": 4}  # agreed
    assert not list((tmp_path / "separate1" / "checkpoints").glob(".main_process_*"))
    shared = [r["shared"] for r in ranks]
    assert [r["writer"] for r in shared] == [True, False]  # one folder: only the main process writes it
    assert all(r["complete"] == ["step_000002", "step_000003"] and r["resume"] == "step_000003" for r in shared)
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(shared[0]["files"])


def test_resume_auto_takes_the_newest_step_every_process_has():
    assert newest_common_step([[2, 4, 6], [4, 6]]) == 6
    assert newest_common_step([[4, 6], [2, 4]]) == 4
    assert newest_common_step([[], []]) is None
    with pytest.raises(UserError, match="no checkpoint step is complete for every process"):
        newest_common_step([[2, 4], []])
