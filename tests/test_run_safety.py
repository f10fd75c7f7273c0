"""What a run survives: a full disk or read-only folder while saving, a torn metrics line, a checkpoint that would run code."""

import errno
import os
import shutil
from pathlib import Path

import pytest
import torch

from nlpssl.checkpoints import complete_checkpoints, find_resume_point
from nlpssl.data.collators import MLMCollator
from nlpssl.errors import UserError
from nlpssl.models.text import build_mlm_model
from nlpssl.objectives.mlm import MaskedLM
from nlpssl.safe_loading import load_checkpoint_metadata, verify_checkpoint
from nlpssl.train import TrainConfig, train
from tests.helpers import TINY_DIMS, read_metrics, tiny_blocks

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def setup():
    return tiny_blocks(16)


def _run(setup, output_dir, max_steps, **options):
    tokenizer, blocks = setup
    torch.manual_seed(0)
    defaults = dict(batch_size=4, log_every=1, save_every=2, eval_every=100, warmup_steps=1, cpu_threads=1)
    cfg = TrainConfig(output_dir=str(output_dir), max_steps=max_steps, **(defaults | options))
    return train(MaskedLM(build_mlm_model(tokenizer, TINY_DIMS)), blocks, MLMCollator(tokenizer), cfg, tokenizer=tokenizer)


@pytest.fixture(scope="module")
def two_steps(setup, tmp_path_factory):
    """A finished 2-step run (checkpoint step 2, final/); each test works on a copy."""
    out = tmp_path_factory.mktemp("run") / "run"
    _run(setup, out, 2)
    return out


@pytest.fixture
def run(two_steps, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(two_steps, copy)
    return copy


def _fail_writes_with(monkeypatch, code: int, message: str) -> None:
    """torch.save (the optimizer and RNG files of a checkpoint) writes part of its file, then fails with ``code``."""

    def failing_save(obj, f, *args, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"partial")
        raise OSError(code, message)

    monkeypatch.setattr(torch, "save", failing_save)


def test_full_disk_while_saving_a_checkpoint_is_one_line_and_the_previous_checkpoint_stays(setup, run, monkeypatch):
    _fail_writes_with(monkeypatch, errno.ENOSPC, "No space left on device")
    with pytest.raises(UserError) as caught:
        _run(setup, run, 4, resume="auto", keep_checkpoints=1)
    message = str(caught.value)
    assert message.startswith("no space left on the device while writing checkpoint step_000004") and "\n" not in message
    assert str(run / "checkpoints" / "step_000004.tmp") in message and "of free space needed" in message
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000002"]  # the partial one removed, the old one kept
    monkeypatch.undo()
    verify_checkpoint(run / "checkpoints" / "step_000002")
    _run(setup, run, 4, resume="auto", keep_checkpoints=1)  # the space is back: the run goes on from step 2
    assert [p.name for p in complete_checkpoints(run)] == ["step_000004"]


def test_read_only_filesystem_while_saving_is_one_line(setup, run, monkeypatch):
    _fail_writes_with(monkeypatch, errno.EROFS, "Read-only file system")
    with pytest.raises(UserError, match=r"cannot write checkpoint step_000004 to .*step_000004\.tmp: the folder is read-only"):
        _run(setup, run, 4, resume="auto")
    assert find_resume_point(run, "auto").name == "step_000002"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_checkpoints_folder_is_one_line(setup, run):
    (run / "checkpoints").chmod(0o555)
    try:
        with pytest.raises(UserError, match="read-only or not yours"):
            _run(setup, run, 4, resume="auto")
    finally:
        (run / "checkpoints").chmod(0o755)
    assert [p.name for p in complete_checkpoints(run)] == ["step_000002"]


def test_full_disk_while_exporting_keeps_the_previous_final(setup, run, monkeypatch):
    def failing_export(self, directory, state_dict=None):
        (directory / "model.safetensors").write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(MaskedLM, "export", failing_export)
    before = (run / "final" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match=r"no space left on the device while writing the model export final/ to .*final"):
        _run(setup, run, 2, resume="auto")  # resumes at the last step: only final/ is written again
    assert (run / "final" / "model.safetensors").read_bytes() == before and not (run / "final.tmp").exists()


def test_exports_written_under_a_temporary_name_are_named_by_their_final_one(two_steps):
    assert sorted(p.name for p in two_steps.iterdir() if ".tmp" in p.name or ".old" in p.name) == []
    final_card = (two_steps / "final" / "README.md").read_text()
    checkpoint_card = (two_steps / "checkpoints" / "step_000002" / "model" / "README.md").read_text()
    assert f'model="{two_steps.resolve() / "final"}"' in final_card and "# run/final" in final_card
    assert "step_000002/model" in checkpoint_card and ".tmp" not in final_card + checkpoint_card


def test_a_torn_last_metrics_line_is_dropped_on_resume(setup, run):
    with (run / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 3, "loss": 6.1')  # killed mid-write
    _run(setup, run, 3, resume="auto")
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == [1, 2, 3]


class _RunsCode:
    """Unpickling this runs a shell command: what a checkpoint from a stranger could hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("planted", ["random_states_0.pkl", "optimizer.bin"])
def test_resume_refuses_a_checkpoint_whose_pickle_would_run_code(setup, run, tmp_path, planted):
    marker = tmp_path / "MARKER"
    checkpoint = run / "checkpoints" / "step_000002"
    torch.save({"step": 0, "random_state": _RunsCode(marker), "state": {}, "param_groups": []}, checkpoint / planted)
    with pytest.raises(UserError) as caught:
        _run(setup, run, 4, resume="auto")
    message = str(caught.value)
    assert str(checkpoint / planted) in message and "could run code" in message and "posix.system" in message
    assert "\n" not in message and not marker.exists()


def test_every_torch_load_is_weights_only_and_nothing_trusts_remote_code():
    sources = {path: path.read_text() for path in (Path(__file__).resolve().parents[1] / "nlpssl").rglob("*.py")}
    loads = [(path.name, line.strip()) for path, text in sources.items() for line in text.splitlines() if "torch.load(" in line]
    assert loads and all("weights_only=True" in line for _, line in loads), loads
    assert not [path.name for path, text in sources.items() if "trust_remote_code=True" in text or "pickle.load(" in text]


def test_sharded_checkpoint_metadata_is_read_without_running_code(tmp_path):
    import pickle

    import torch.distributed.checkpoint as dcp

    dcp.save({"weight": torch.randn(3, 4), "step": torch.tensor(2)}, checkpoint_id=str(tmp_path / "checkpoint" / "model_fsdp_0"))
    verify_checkpoint(tmp_path / "checkpoint")  # a real FSDP-style index passes
    assert "weight" in load_checkpoint_metadata(tmp_path / "checkpoint" / "model_fsdp_0" / ".metadata").state_dict_metadata
    marker = tmp_path / "MARKER"
    (tmp_path / "checkpoint" / "model_fsdp_0" / ".metadata").write_bytes(pickle.dumps(_RunsCode(marker)))
    with pytest.raises(UserError, match=r"\.metadata holds a pickle that could run code when loaded \(unsupported global posix\.system\)"):
        verify_checkpoint(tmp_path / "checkpoint")
    assert not marker.exists()
