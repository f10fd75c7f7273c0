"""Two-step smoke runs of the scripts, through `accelerate launch` as users run them (bad input: test_bad_input.py; several processes: test_launch.py)."""

import os
import subprocess
import sys
from pathlib import Path

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

