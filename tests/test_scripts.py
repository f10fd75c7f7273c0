"""Two-step smoke runs of the scripts, through `accelerate launch` as users run them."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoModelForMaskedLM, pipeline

from tests.helpers import TINY_OVERRIDES, read_metrics

REPO = Path(__file__).resolve().parents[1]


def run_script(*args: str, launcher: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes=1", "--cpu"] if launcher else [sys.executable]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    return subprocess.run([*command, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def test_pretrain_mlm_two_steps_through_accelerate_launch(tmp_path):
    out = tmp_path / "mlm"
    result = run_script("scripts/pretrain_mlm.py", *TINY_OVERRIDES, "--train.max_steps=2", f"--train.output_dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [r["step"] for r in read_metrics(out) if "loss" in r] == [2]  # log_every=10: the last step is logged
    assert (out / "config.yaml").is_file()
    assert type(AutoModelForMaskedLM.from_pretrained(out / "final")).__name__ == "ModernBertForMaskedLM"  # configs/mlm.yaml's
    fill = pipeline("fill-mask", model=str(out / "final"))
    assert len(fill("in the beginning god created the [MASK].")) == 5


def test_pretrain_mlm_on_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp"
    env_config = str(REPO / "configs" / "accelerate" / "cpu_2proc.yaml")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", env_config, "scripts/pretrain_mlm.py"]
    args = [*TINY_OVERRIDES, "--train.max_steps=2", "--train.save_every=2", f"--train.output_dir={out}"]
    result = subprocess.run([*command, *args], cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    checkpoint = out / "checkpoints" / "step_000002"
    assert (checkpoint / "random_states_0.pkl").is_file() and (checkpoint / "random_states_1.pkl").is_file()


def test_train_tokenizer_script(tmp_path):
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n".join(f"line number {i} of a small corpus" for i in range(200)))
    result = run_script(
        "scripts/train_tokenizer.py", f"--data.corpus={corpus}", "--tokenizer.vocab_size=120", f"--output.dir={tmp_path / 'tok'}",
        launcher=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(tmp_path / "tok").mask_token == "[MASK]"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--train.nope=1"], "unknown key 'nope'"),
        (["--data.corpus=/no/such/file.txt"], "not found"),
        (["--tokenizer.path=/no/such/tokenizer"], "tokenizer folder /no/such/tokenizer not found"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message, tmp_path):
    result = run_script("scripts/pretrain_mlm.py", *args, f"--train.output_dir={tmp_path}", launcher=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1
