"""The loop under FSDP2 on two CPU processes: the same losses as DDP, whole exports, sharded checkpoints, exact resume.

Accelerate never selects FSDP for processes without a GPU (they run as gloo DDP,
and nlpssl refuses an FSDP launch config there), but torch's FSDP2 itself runs
on CPU over gloo. These tests switch Accelerate's state to FSDP2 after it has
started the gloo processes, so the loop's FSDP code paths run here: evaluation
inside :func:`nlpssl.sharding.whole_model` (unequal numbers of evaluation batches
per process, an evaluator that calls a submodule of the objective), ``best/``,
``final/`` and each checkpoint's ``model/`` written from the gathered state dict,
and checkpoints in Accelerate's sharded format.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForMaskedLM

import nlpssl.train
from nlpssl.checkpoints import complete_checkpoints
from nlpssl.data.collators import MLMCollator
from nlpssl.evaluation.selection import KeepBest
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, accelerator_rank, run_gloo_ranks, tiny_blocks, train_losses

WORLD = 2
STEPS = 4


@pytest.fixture(scope="module")
def setup():
    return tiny_blocks(40)


@contextlib.contextmanager
def _as_fsdp2(accelerator):
    """Switch a started CPU Accelerator to FSDP2 (full shard, one unit per layer from ``_no_split_modules``)."""
    from accelerate import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2, auto_wrap_policy="transformer_based_wrap", state_dict_type="SHARDED_STATE_DICT", reshard_after_forward=True,
    )
    accelerator.state.fsdp_plugin = plugin
    for state in (accelerator.state, PartialState()):
        state.distributed_type = DistributedType.FSDP
    yield accelerator


def _first_layer_norm(objective) -> dict:
    """An evaluator that runs a submodule of the objective directly (not its forward): needs the whole model."""
    embeddings = objective.model.bert.embeddings
    ids = torch.arange(8).unsqueeze(0)  # (1, 8)
    return {"embedding_norm": float(embeddings(input_ids=ids).norm())}


def _worker(setup, case: str, rank: int, port: int, out_dir: str) -> None:
    tokenizer, blocks = setup
    with accelerator_rank(rank, WORLD, port) as accelerator:
        context = _as_fsdp2(accelerator) if case.startswith("fsdp") else contextlib.nullcontext(accelerator)
        with context as ready:
            nlpssl.train.make_accelerator = lambda *args: ready  # the loop takes this (forced) Accelerator
            if case == "lockstep":  # DeepSpeed ZeRO-3's evaluation, on DDP: the same forward passes on every process
                nlpssl.train.evaluation_in_lockstep = lambda accelerator: True
            torch.manual_seed(0)
            objective = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
            eval_forwards, evaluator_calls = [], []
            objective.register_forward_pre_hook(lambda module, args: eval_forwards.append(1) if not module.training else None)
            run = Path(out_dir) / "run"
            keep = KeepBest(lambda o: evaluator_calls.append(1) or _first_layer_norm(o), "embedding_norm", run / "best", tokenizer)
            steps = 2 if case == "fsdp_first_half" else STEPS
            cfg = TrainConfig(
                output_dir=str(run), max_steps=steps if case != "fsdp_resumed" else STEPS, batch_size=4, log_every=1,
                eval_every=2, eval_batches=3, save_every=2, warmup_steps=1, cpu_threads=1, seed=0,
                resume="auto" if case == "fsdp_resumed" else "",
            )
            trained = train(objective, blocks, MLMCollator(tokenizer), cfg, eval_dataset=blocks, evaluators=[keep], tokenizer=tokenizer)
            weights = {name: tensor.clone() for name, tensor in ready.get_state_dict(trained).items()}
            result = {"weights": weights, "eval_forwards": len(eval_forwards), "evaluator_calls": len(evaluator_calls)}
            torch.save(result, Path(out_dir) / f"rank{rank}.pt")


def _launch(setup, case: str, out_dir: Path) -> list[dict]:
    return run_gloo_ranks(functools.partial(_worker, setup, case), WORLD, out_dir, "fork", timeout_s=300)


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory) -> tuple[Path, dict]:
    """DDP for 4 steps; FSDP2 for 4 steps; FSDP2 for 2 steps, then resumed to 4 in the same folder; DDP evaluating in lockstep."""
    root = tmp_path_factory.mktemp("sharded")
    results = {}
    cases = (("ddp", "ddp"), ("fsdp", "fsdp"), ("fsdp_first_half", "resume"), ("fsdp_resumed", "resume"), ("lockstep", "lockstep"))
    for case, folder in cases:
        (root / folder).mkdir(exist_ok=True)
        results[case] = _launch(setup, case, root / folder)
    return root, results


def test_fsdp2_trains_like_ddp(runs):
    root, weights = runs
    ddp, fsdp = train_losses(root / "ddp" / "run"), train_losses(root / "fsdp" / "run")
    assert [step for step, _ in fsdp] == [1, 2, 3, 4]
    for (_, expected), (_, got) in zip(ddp, fsdp):
        assert got == pytest.approx(expected, rel=1e-5)
    assert ddp[0][1] != ddp[-1][1]  # the weights moved
    for name, tensor in weights["ddp"][0]["weights"].items():
        torch.testing.assert_close(weights["fsdp"][0]["weights"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)


def test_fsdp2_exports_are_whole_models(runs):
    root, weights = runs
    run = root / "fsdp" / "run"
    gathered = weights["fsdp"][0]["weights"]
    final = AutoModelForMaskedLM.from_pretrained(run / "final")
    for name, tensor in final.state_dict().items():
        torch.testing.assert_close(tensor, gathered[f"model.{name}"], msg=name)
    assert (run / "best" / "best.json").is_file() and (run / "best" / "tokenizer.json").is_file()
    AutoModelForMaskedLM.from_pretrained(run / "best")
    checkpoint = complete_checkpoints(run)[-1]
    assert checkpoint.name == "step_000004" and (checkpoint / "pytorch_model_fsdp_0").is_dir()  # sharded training state
    assert AutoModelForMaskedLM.from_pretrained(checkpoint / "model").num_parameters() == final.num_parameters()


def test_fsdp2_evaluation_runs_unequal_batch_counts(runs):
    """3 evaluation batches on 2 processes: one runs 2, the other 1; the loss equals DDP's."""
    root, _ = runs
    ddp = [r for r in _records(root / "ddp" / "run") if "eval_loss" in r]
    fsdp = [r for r in _records(root / "fsdp" / "run") if "eval_loss" in r]
    assert [r["step"] for r in fsdp] == [2, 4]
    for expected, got in zip(ddp, fsdp):
        assert got["eval_loss"] == pytest.approx(expected["eval_loss"], rel=1e-5)
        assert got["embedding_norm"] == pytest.approx(expected["embedding_norm"], rel=1e-5)


def test_fsdp2_resume_from_sharded_checkpoint_is_exact(runs):
    root, weights = runs
    straight, resumed = train_losses(root / "fsdp" / "run"), train_losses(root / "resume" / "run")
    assert [s for s, _ in resumed] == [1, 2, 3, 4]
    assert resumed == straight
    for name, tensor in weights["fsdp"][0]["weights"].items():
        torch.testing.assert_close(weights["fsdp_resumed"][0]["weights"][name], tensor, rtol=0, atol=0, msg=name)


def test_lockstep_evaluation_runs_the_same_forward_passes_everywhere_and_the_same_loss(runs):
    """How ZeRO-3 evaluates (its forward passes are collectives): padded to the busiest process, extra batches uncounted."""
    root, results = runs
    ddp, lockstep = results["ddp"], results["lockstep"]
    assert [r["eval_forwards"] for r in ddp] == [4, 2]  # 3 batches, 2 evaluations: unequal without lockstep
    assert [r["eval_forwards"] for r in lockstep] == [4, 4]
    assert [r["evaluator_calls"] for r in ddp] == [2, 0] and [r["evaluator_calls"] for r in lockstep] == [2, 2]
    expected = [r for r in _records(root / "ddp" / "run") if "eval_loss" in r]
    got = [r for r in _records(root / "lockstep" / "run") if "eval_loss" in r]
    assert [r["eval_loss"] for r in got] == pytest.approx([r["eval_loss"] for r in expected], rel=1e-6)
    assert (root / "lockstep" / "run" / "best" / "best.json").is_file()


def _records(folder: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


# ---- every export writes the weights it is given (what the loop gathers), not the module's own ----


def _perturbed(objective) -> dict[str, torch.Tensor]:
    """The objective's state dict with every float tensor changed: what another process's weights would look like."""
    return {name: t + 0.5 if t.is_floating_point() else t for name, t in objective.state_dict().items()}


def _saved(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_text_exports_write_the_given_state_dict(setup, tmp_path):
    from transformers import BertConfig, BertModel

    from nlpssl.models.heads import SentencePooler
    from nlpssl.objectives.simcse import SimCSE

    tokenizer, _ = setup
    mlm = MaskedLM(build_mlm_model(tokenizer, TINY_DIMS))
    weights = _perturbed(mlm)
    mlm.export(tmp_path / "mlm", state_dict=weights)
    reloaded = AutoModelForMaskedLM.from_pretrained(tmp_path / "mlm")
    for name, tensor in reloaded.state_dict().items():
        torch.testing.assert_close(tensor, weights[f"model.{name}"], msg=name)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    simcse = SimCSE(BertModel(config), SentencePooler("cls", 32), num_views=2, gather=False)
    weights = _perturbed(simcse)
    simcse.export(tmp_path / "simcse", state_dict=weights)
    encoder, dense = _saved(tmp_path / "simcse"), _saved(tmp_path / "simcse" / "2_Dense")
    torch.testing.assert_close(encoder["encoder.layer.0.output.dense.weight"], weights["encoder.encoder.layer.0.output.dense.weight"])
    torch.testing.assert_close(encoder["pooler.dense.weight"], weights["pooler.mlp.dense.weight"])  # the MLP kept in BERT's pooler
    torch.testing.assert_close(dense["linear.weight"], weights["pooler.mlp.dense.weight"])
    assert not torch.equal(encoder["pooler.dense.weight"], simcse.encoder.pooler.dense.weight)  # the module itself is untouched


@pytest.mark.parametrize("method", ["simclr", "mae"])
def test_image_exports_write_the_given_state_dict(tmp_path, method):
    from nlpssl.models.vision import load_backbone
    from nlpssl.recipes.vision import build_objective
    from tests.test_vision_objectives import tiny_recipe

    objective = build_objective(tiny_recipe(method))
    weights = _perturbed(objective)
    objective.export(tmp_path, state_dict=weights)
    backbone, _ = load_backbone(tmp_path)
    prefix = "mae.vit." if method == "mae" else "backbone."
    for name, tensor in backbone.state_dict().items():
        key = prefix + name.removeprefix("vit.") if method == "mae" else prefix + name
        torch.testing.assert_close(tensor, weights[key], msg=name)
