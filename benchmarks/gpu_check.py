"""A GPU run ready to go: the GPU tests, bf16 MLM throughput and MFU against Hugging Face, sharded smoke runs.

    python benchmarks/gpu_check.py                 # one or more NVIDIA GPUs, a few minutes
    python benchmarks/gpu_check.py --tiny          # CPU, fp32, 1-layer hidden-32 models: checks the script itself
    python benchmarks/gpu_check.py --peak-tflops 400   # a card missing from PEAK_TFLOPS

1. ``pytest -m gpu`` on the modules that mark GPU tests: bf16 steps, pinned batches, inductor compile (skipped without CUDA).
2. MLM training steps on BERT-base dimensions (12 layers, hidden 768, vocab 30,522,
   sequence 128), bf16 autocast, on the same batches: nlpssl (MLMCollator + MaskedLM
   with the sparse head + the loop's fused AdamW) and the Hugging Face recipe
   (DataCollatorForLanguageModeling + BertForMaskedLM + torch AdamW fused). A step
   is collation + copy + forward + backward + clip + optimizer step; rounds alternate
   the sides after a warm-up; the device is synchronised at the end of each round
   only. MFU: tokens/s x the full model's training FLOPs per token
   (6 x (non-embedding parameters + the vocabulary projection) + 12 x layers x hidden
   x sequence, as in PaLM's appendix B) / the card's dense bf16 peak. Both sides are
   charged the full-vocabulary head's FLOPs, so nlpssl's sparse head shows as more
   useful work per second.
3. ``scripts/pretrain_mlm.py`` for 2 steps under ``configs/accelerate/fsdp.yaml`` and
   ``deepspeed_zero2.yaml``: 2 processes on 2 or more GPUs, 1 process (the code path,
   no communication) on one GPU; skipped with a note without a GPU, and DeepSpeed
   when it is not installed.

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, bert_tokenizer, cycle, print_result, row_batches  # noqa: E402

from nlpssl.data.collators import MLMCollator  # noqa: E402
from nlpssl.data.corpus import load_corpus  # noqa: E402
from nlpssl.data.text import tokenize_and_pack  # noqa: E402
from nlpssl.data.tokenizer import train_tokenizer  # noqa: E402
from nlpssl.models.text import TransformerDims, bert_config  # noqa: E402
from nlpssl.objectives.mlm import MaskedLM  # noqa: E402
from nlpssl.optim import make_optimizer  # noqa: E402

# Dense bf16 TFLOP/s by device name; the first substring that matches wins (longer names first).
PEAK_TFLOPS = [("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("H200", 989.0), ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0)]
BERT_BASE = TransformerDims(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072)
TINY = TransformerDims(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64)
VOCAB = 30_522


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="CPU-sized: 1-layer hidden-32 models, a few steps, fp32")
    parser.add_argument("--peak-tflops", type=float, default=None, help="the card's dense bf16 peak, if not in the table")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side per round")
    parser.add_argument("--skip-tests", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        args.batch_size, args.rounds, args.steps = 4, 2, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    result = {"benchmark": "gpu_check", "device": name, "gpus": torch.cuda.device_count(), "tiny": args.tiny}
    result["tests"] = {"skipped": "--skip-tests"} if args.skip_tests else run_gpu_tests()
    result |= mlm_throughput(args, device, name)
    gpus = torch.cuda.device_count()
    for label, config in (("fsdp", "fsdp.yaml"), ("deepspeed_zero2", "deepspeed_zero2.yaml")):
        result[label] = sharded_smoke_run(config, gpus, needs="deepspeed" if label.startswith("deepspeed") else None)
        print(f"{label}: {result[label]}")
    print_result(result)


def gpu_test_files(tests: Path = REPO / "tests") -> list[str]:
    """The test modules that mark tests ``gpu``: collecting only them spares importing the whole suite."""
    return sorted(str(path.relative_to(REPO)) for path in tests.glob("test_*.py") if "mark.gpu" in path.read_text())


def run_gpu_tests() -> dict:
    """``pytest -m gpu`` on :func:`gpu_test_files`: counts of passed, failed, skipped (from pytest's JUnit XML)."""
    import xml.etree.ElementTree as ElementTree

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "gpu_tests.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "-p", "no:xdist", f"--junitxml={report}",
                   *gpu_test_files()]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
        suite = ElementTree.parse(report).getroot() if report.is_file() else None
    suite = suite.find("testsuite") if suite is not None and suite.tag == "testsuites" else suite
    counts = {key: int(suite.get(key, 0)) for key in ("tests", "failures", "errors", "skipped")} if suite is not None else {}
    if counts:
        counts["passed"] = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    if done.returncode:
        print(done.stdout[-3000:])
    print(f"gpu tests: {counts or done.stderr[-300:]}")
    return counts | {"exit_status": done.returncode, "seconds": round(time.perf_counter() - started, 1)}


def mlm_throughput(args, device: torch.device, name: str) -> dict:
    """Tokens/s and MFU of both MLM recipes on the same batches."""
    from transformers import BertForMaskedLM, DataCollatorForLanguageModeling

    tokenizer, dims = _tokenizer(args.tiny), TINY if args.tiny else BERT_BASE
    corpus = load_corpus("bible-web").select(range(60 if args.tiny else 600))
    blocks, _ = tokenize_and_pack(corpus, tokenizer, block_size=128)
    count = min(len(blocks) // args.batch_size, 40)
    examples = row_batches(blocks, args.batch_size, count, columns=("input_ids", "special_tokens_mask"))
    config = bert_config(dims, tokenizer)
    config.vocab_size = len(tokenizer) if args.tiny else max(VOCAB, len(tokenizer))
    bf16 = device.type == "cuda" and not args.tiny
    torch.manual_seed(0)
    ours = MaskedLM(BertForMaskedLM(config)).to(device)
    torch.manual_seed(0)
    theirs = BertForMaskedLM(config).to(device)
    generator = torch.Generator().manual_seed(0)
    collate_ours = MLMCollator(tokenizer)
    collate_theirs = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=0.15, return_tensors="pt")
    steps = {
        "nlpssl": _step(lambda batch: ours(batch)["loss"], ours, make_optimizer(ours, lr=1e-4, weight_decay=0.01),
                        lambda rows: collate_ours(rows, generator=generator), cycle(examples), device, bf16),
        "hf": _step(lambda batch: theirs(**batch).loss, theirs, _fused_adamw(theirs, device),
                    collate_theirs, cycle(examples), device, bf16),
    }
    rates = _alternate(steps, args.rounds, args.steps, device)
    flops = training_flops_per_token(config, 128)
    peak = args.peak_tflops or peak_tflops(name)
    line = {"nlpssl_tokens_per_s": round(rates["nlpssl"]), "hf_tokens_per_s": round(rates["hf"]),
            "ratio": round(rates["nlpssl"] / rates["hf"], 3), "flops_per_token": flops, "precision": "bf16" if bf16 else "fp32",
            "model": f"BERT hidden {dims.hidden_size}, {dims.num_layers} layers, vocab {config.vocab_size:,}, sequence 128, batch {args.batch_size}"}
    for side in ("nlpssl", "hf"):
        line[f"{side}_mfu"] = round(rates[side] * flops / (peak * 1e12), 4) if peak else None
    line["peak_tflops"] = peak
    print(f"MLM step  nlpssl {rates['nlpssl']:>12,.0f} tok/s   hf {rates['hf']:>12,.0f} tok/s   ratio {line['ratio']:.2f}x")
    print(f"MFU       nlpssl {line['nlpssl_mfu']}   hf {line['hf_mfu']}   (peak {peak} TFLOP/s bf16 dense, {name})")
    return line


def training_flops_per_token(config, sequence: int) -> int:
    """6 N + 12 L H S: N the non-embedding parameters plus the tied vocabulary projection (PaLM, appendix B)."""
    hidden, layers, inner = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * hidden * hidden + 2 * hidden * inner  # attention projections + feed-forward (weights only)
    head = hidden * hidden + hidden * config.vocab_size  # MLM transform + decoder
    return 6 * (layers * per_layer + head) + 12 * layers * hidden * sequence


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 TFLOP/s of a known card (``PEAK_TFLOPS``); None otherwise (pass ``--peak-tflops``)."""
    return next((peak for key, peak in PEAK_TFLOPS if key in device_name), None)


def sharded_smoke_run(config: str, gpus: int, needs: str | None = None) -> str:
    """2 steps of scripts/pretrain_mlm.py (small model, bf16) under a sharded launch config: "ok: ...", "failed: ..." or "skipped: ...".

    Two processes on two or more GPUs; on one GPU a single process runs Accelerate's
    real FSDP / DeepSpeed code path (prepare, sharded checkpoint, gathered export)
    without any communication.
    """
    if gpus < 1:
        return f"skipped: no GPU; {config} needs GPUs"
    if needs and subprocess.run([sys.executable, "-c", f"import {needs}"], capture_output=True).returncode:
        return f"skipped: {needs} not installed (pip install {needs})"
    processes = min(gpus, 2)
    with tempfile.TemporaryDirectory() as out:
        command = [
            sys.executable, "-m", "accelerate.commands.launch", "-q", "--config_file", str(REPO / "configs" / "accelerate" / config),
            "--num_processes", str(processes), "scripts/pretrain_mlm.py", "--train.max_steps=2", "--train.save_every=2",
            "--train.eval_every=2", "--train.log_every=1", "--train.precision=bf16", "--model.hidden_size=64", "--model.num_layers=2",
            "--model.num_heads=2", "--model.intermediate_size=128", "--tokenizer.vocab_size=2000", "--data.block_size=64",
            "--train.batch_size=8", f"--train.output_dir={out}",
        ]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=os.environ | {"PYTHONPATH": str(REPO)})
        if done.returncode:
            print(done.stderr[-4000:])
            return "failed: " + (done.stderr.strip().splitlines() or ["no output"])[-1][:300]
        from transformers import AutoModelForMaskedLM

        AutoModelForMaskedLM.from_pretrained(Path(out) / "final")
        losses = [json.loads(line)["loss"] for line in (Path(out) / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
        note = "" if processes > 1 else " (1 process: one GPU, no sharding across devices)"
        return f"ok{note}: losses {', '.join(f'{loss:.4f}' for loss in losses)}; final/ loads"


def _tokenizer(tiny: bool):
    if tiny:
        return train_tokenizer(load_corpus("bible-web").select(range(60))["text"], vocab_size=500, model_max_length=512)
    tokenizer, label = bert_tokenizer()
    print(f"tokenizer: {label}")
    return tokenizer


def _fused_adamw(model, device: torch.device):
    return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, fused=device.type == "cuda")


def _step(loss_of_batch, module, optimizer, collate, examples, device: torch.device, bf16: bool):
    """One timed step; returns the batch's tokens, counted on the host before the copy (no device read)."""
    parameters = list(module.parameters())
    pin = device.type == "cuda"

    def step() -> float:
        batch = collate(next(examples))
        tokens = float(batch["attention_mask"].sum())
        batch = {k: (v.pin_memory() if pin else v).to(device, non_blocking=True) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_of_batch(batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return tokens

    return step


def _alternate(steps: dict, rounds: int, steps_per_round: int, device: torch.device, warmup: int = 3) -> dict[str, float]:
    """Median tokens/s per side over rounds that alternate the order; the device is synchronised per round."""
    import statistics

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in steps.values():
        for _ in range(warmup):
            step()
    sync()
    rates = {name: [] for name in steps}
    for index in range(rounds):
        for name in list(steps) if index % 2 == 0 else reversed(list(steps)):
            started, tokens = time.perf_counter(), 0.0
            for _ in range(steps_per_round):
                tokens += steps[name]()
            sync()
            rates[name].append(tokens / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


if __name__ == "__main__":
    main()
