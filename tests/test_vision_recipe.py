"""The vision recipe: its checks, the --method shortcut, and 2-step runs of scripts/pretrain_vision.py.

The one-process runs call the script's ``main`` in this process (as `python
scripts/pretrain_vision.py` would, minus a second of imports each); the
two-process runs go through `accelerate launch`, as users start them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from nlpssl.config import load_config
from nlpssl.data.images import ImageSet
from nlpssl.errors import UserError
from nlpssl.models.momentum import KeyQueue
from nlpssl.recipes.vision import METHODS, VisionRecipe, backbone_spec, check_recipe, method_shortcut, subset, subset_rows
from tests.helpers import free_port, load_script, read_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs" / "vision"
TINY = [
    "--train.max_steps=2", "--train.batch_size=8", "--model.width=8", "--eval.probe_epochs=2", "--train.eval_every=2",
    "--data.image_size=24", "--data.max_train_images=64", "--eval.max_bank_images=64", "--eval.max_test_images=32",
    "--method.hidden_dim=32", "--train.cpu_threads=1",
]
TINY_VIT = [
    "--model.hidden_size=32", "--model.num_layers=1", "--model.num_heads=2",
    "--model.decoder_hidden_size=32", "--model.decoder_num_heads=2", "--model.decoder_num_layers=1",
]


def recipe(name: str = "simclr", **sections) -> VisionRecipe:
    """A method's own yaml recipe with ``sections`` overridden, e.g. ``recipe("moco", method={"queue_size": 100})``."""
    cfg = load_config(VisionRecipe, ["--config", str(CONFIGS / f"{name}.yaml")])
    for name, values in sections.items():
        setattr(cfg, name, replace(getattr(cfg, name), **values))
    return cfg


def check(cfg: VisionRecipe, num_processes: int = 1) -> None:
    """Everything the script checks before it writes anything."""
    check_recipe(cfg, num_processes)
    backbone_spec(cfg)


# ---- checks: one actionable line each ----


@pytest.mark.parametrize(
    "cfg, processes, message",
    [
        (
            recipe("moco", method={"queue_size": 100}, train={"batch_size": 8}), 2,
            "method.queue_size=100 must be a multiple of the global batch 16 (train.batch_size x 2 processes)",
        ),
        (recipe("simclr", train={"batch_size": 1}), 1, "train.batch_size=1: simclr needs at least 2 images per process"),
        (recipe("mae", model={"patch_size": 5}), 1, "patch_size=5 does not divide data.image_size=32; choose a divisor such as 4"),
        (recipe("mae", model={"mask_ratio": 0.0}), 1, "model.mask_ratio=0.0 must lie strictly between 0 and 1"),
        (recipe("mae", model={"mask_ratio": 1.0}), 1, "model.mask_ratio=1.0 must lie strictly between 0 and 1"),
        (recipe("mae", model={"architecture": "resnet18"}), 1, "method mae trains a vit backbone; set --model.architecture=vit"),
        (recipe("simclr", model={"architecture": "vit"}), 1, "set --model.architecture=resnet18"),
        (recipe("colorization", data={"channels": 1}), 1, "colorization needs RGB images (data.channels=3)"),
        (recipe("jigsaw", data={"image_size": 16}), 1, "data.image_size=16 is too small; use 24 or more"),
    ],
    ids=["queue", "batch1", "patch", "mask0", "mask1", "mae-resnet", "simclr-vit", "colour-grey", "jigsaw-small"],
)
def test_recipes_that_cannot_train_fail_with_one_line_saying_what_to_change(cfg, processes, message):
    with pytest.raises(UserError, match=re.escape(message)) as error:
        check(cfg, processes)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("accum", [1, 2])
def test_the_suggested_queue_size_passes_the_check(accum):
    cfg = recipe("moco", method={"queue_size": 100}, train={"batch_size": 8, "grad_accum_steps": accum})
    with pytest.raises(UserError, match=r"try (\d+)") as error:
        check(cfg, 2)
    suggested = int(re.search(r"try (\d+)", str(error.value)).group(1))
    check(recipe("moco", method={"queue_size": suggested}, train={"batch_size": 8, "grad_accum_steps": accum}), 2)
    with pytest.raises(UserError, match="hold one optimizer step"):  # one optimizer step's keys must fit
        check(recipe("moco", method={"queue_size": 16}, train={"batch_size": 8, "grad_accum_steps": 2}), 2)


def test_every_recipe_passes_its_own_checks():
    for method in METHODS:
        cfg = recipe(method)
        assert cfg.method.name == method
        check(cfg)


def test_subset_rows_split_the_images_into_the_seeded_subset_and_the_rest():
    inside, outside = subset_rows(50, 20, seed=3)
    assert len(inside) == 20 and len(outside) == 30
    assert sorted(torch.cat([inside, outside]).tolist()) == list(range(50))
    assert torch.equal(inside, subset_rows(50, 20, seed=3)[0]) and not torch.equal(inside, subset_rows(50, 20, seed=4)[0])
    images = ImageSet(torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1), torch.arange(50), ["a"], 0)
    assert subset(images, 20, seed=3).labels.tolist() == inside.tolist()


def test_method_shortcut_reads_the_method_recipe():
    configs = Path("configs/vision")
    byol_yaml, mae_yaml = str(configs / "byol.yaml"), str(configs / "mae.yaml")
    assert method_shortcut(["--method=byol", "--train.lr=1e-3"], configs) == ["--config", byol_yaml, "--train.lr=1e-3"]
    assert method_shortcut(["--train.lr=1e-3", "--method", "mae"], configs) == ["--train.lr=1e-3", "--config", mae_yaml]
    assert method_shortcut(["--train.lr=1e-3"], configs) == ["--train.lr=1e-3"]
    with pytest.raises(UserError, match="--method=dino is unknown; choose from: simclr, moco, byol"):
        method_shortcut(["--method=dino"], configs)
    with pytest.raises(UserError, match="give --method or --config, not both"):
        method_shortcut(["--config", "configs/vision/moco.yaml", "--method=byol"], configs)


# ---- scripts/pretrain_vision.py, one process, in this process ----


@pytest.fixture(scope="module")
def pretrain_vision():
    """The script as a module: its ``main(argv)``."""
    return load_script("pretrain_vision")


def method_args(method: str, queue_size: int = 16) -> list[str]:
    extra = {"mae": TINY_VIT, "moco": [f"--method.queue_size={queue_size}"]}.get(method, [])
    return [f"--method={method}", *TINY, *extra]


@pytest.mark.parametrize("method", METHODS)
def test_pretrain_vision_two_steps_writes_backbone_metrics_and_pictures(pretrain_vision, method, tmp_path, capsys):
    out = tmp_path / method
    pretrain_vision.main([*method_args(method), f"--train.output_dir={out}"])
    backbone = json.loads((out / "final" / "backbone.json").read_text())
    assert backbone["architecture"] == ("vit" if method == "mae" else "resnet18") and backbone["image_size"] == 24
    assert (out / "final" / ("config.json" if method == "mae" else "model.safetensors")).is_file()
    records = read_metrics(out)
    assert [r["step"] for r in records if "loss" in r] == [2]
    assert [r["step"] for r in records if "knn_accuracy" in r] == [2]
    results = json.loads((out / "metrics.json").read_text())
    assert results["method"] == method and results["steps"] == 2
    assert 0 <= results["knn_accuracy"] <= 100 and 0 <= results["linear_probe_accuracy"] <= 100
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == results
    assert (out / "curves.png").stat().st_size > 0 and (out / "config.yaml").is_file()
    assert (out / "reconstructions.png").is_file() == (method == "mae")
    assert (out / "checkpoints" / "step_000002" / "model" / "backbone.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train.batch_size=1"], "train.batch_size=1: simclr needs at least 2 images per process"),
        (["--data.source={empty}"], "is empty; put images in it"),
        (["--method=mae", "--model.patch_size=5"], "model.patch_size=5 does not divide"),
    ],
    ids=["batch1", "empty-folder", "patch"],
)
def test_bad_input_exits_2_with_one_error_line_and_writes_nothing(pretrain_vision, args, message, tmp_path, capsys):
    empty, out = tmp_path / "empty", tmp_path / "out"
    empty.mkdir()
    argv = [a.format(empty=empty) for a in args] + [f"--data.cache_dir={tmp_path / 'cache'}", f"--train.output_dir={out}"]
    with pytest.raises(SystemExit) as exit_:
        pretrain_vision.main(argv)
    assert exit_.value.code == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists() or not any(out.iterdir())


# ---- two processes through accelerate launch ----


def launch_two_processes(method: str, out: Path) -> subprocess.Popen:
    config = REPO / "configs" / "accelerate" / "cpu_2proc.yaml"
    # A free port, not the default 29500: other runs on this machine may hold it.
    launcher = ["--config_file", str(config), f"--main_process_port={free_port()}"]
    command = [sys.executable, "-m", "accelerate.commands.launch", *launcher, "scripts/pretrain_vision.py"]
    args = [*method_args(method, queue_size=64), "--data.image_size=16", f"--train.output_dir={out}"]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.Popen([*command, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> dict[str, Path]:
    """SimCLR and MoCo, 2 steps on 2 gloo processes each; both launched at once."""
    root = tmp_path_factory.mktemp("two_processes")
    runs = {method: launch_two_processes(method, root / method) for method in ("simclr", "moco")}
    failures = []
    for method, run in runs.items():
        try:
            _, stderr = run.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            run.kill()
            _, stderr = run.communicate()
        if run.returncode != 0:
            failures.append(f"{method}: exit {run.returncode}\n{stderr[-3000:]}")
    assert not failures, "\n".join(failures)
    return {method: root / method for method in runs}


@pytest.mark.parametrize("method", ["simclr", "moco"])
def test_two_processes_complete_with_every_rank_state(two_process_runs, method):
    out = two_process_runs[method]
    checkpoint = out / "checkpoints" / "step_000002"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()
    assert (out / "final" / "backbone.json").is_file()
    assert "knn_accuracy" in json.loads((out / "metrics.json").read_text())


def test_two_process_moco_queue_holds_both_ranks_keys_of_every_step(two_process_runs):
    state = load_file(str(two_process_runs["moco"] / "checkpoints" / "step_000002" / "model.safetensors"))
    queue, position = state["queue.queue"], int(state["queue.position"])  # (K, E), ()
    filled = 2 * 8 * 2  # steps x batch per process x processes
    assert position == filled
    initial = KeyQueue(64, queue.shape[1]).queue  # (K, E) the random rows it started with
    assert torch.equal(queue[filled:], initial[filled:])
    assert not torch.isclose(queue[:filled], initial[:filled]).all(dim=1).any()
    torch.testing.assert_close(queue.norm(dim=1), torch.ones(64))
    assert len({tuple(row.tolist()) for row in queue[:filled]}) == filled  # 32 different keys, none repeated
