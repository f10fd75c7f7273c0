"""Which masked-LM recipe learns most on a fixed CPU budget: validation masked-token accuracy per recipe change.

    python benchmarks/mlm_budget.py                                  # every variant, then the follow-ups, seed 0, the default budget
    python benchmarks/mlm_budget.py --variants base,modernbert --seeds 0 1
    python benchmarks/mlm_budget.py --jobs 2                         # two runs at a time, one thread each
    python benchmarks/mlm_budget.py --quick                          # smoke run: 3 variants, a few steps
    python benchmarks/mlm_budget.py --clm --variants base,dropout0,lr2e-3,block64,combined_clm   # the causal-LM recipe

Every variant is ``scripts/pretrain_mlm.py`` on its default corpus (the World
English Bible) for the same number of training tokens (``--tokens``: optimizer
steps x batch x block length), with one recipe change from ``base`` (the
recipe as it stood before this study: post-LN BERT, hidden 256, 4 layers, 15%
masking, dropout 0.1, peak lr 1e-3, blocks of 128, batch 32), or several
(``combined*``, or ``a+b``: variant a, then b's changes; ``FOLLOW_UPS`` are the second round, on top of the first round's best). Warm-up is 10% of the steps. All variants share one
WordPiece tokenizer (vocab 8,000) trained once on the training split. Each
run evaluates once, at the end, on the same held-out 2% of documents:
masked-token top-1 and top-5 accuracy, and the context-free baseline's (always
guess the most frequent training tokens), which a unigram model only matches.
Width and depth variants keep the per-token compute of ``base``'s layers
(about 12 x layers x hidden^2 multiply-adds).

``seconds`` is each run's wall time (start-up, tokenization of the corpus,
training, evaluation, export); with ``--jobs 2`` two runs share the cores and
only the accuracies compare. ``--clm`` runs ``scripts/pretrain_clm.py`` (GPT-2,
byte-level BPE) instead, judged by next-token accuracy against the unigram
baseline; the variants that concern an encoder or masking do not apply there.
Finished runs are kept in ``runs.jsonl`` in the output folder (``run_ledger.py``): started again
with the same code, arguments and CPU, the benchmark reads them back instead of training them again.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_ledger import RunLedger, fingerprint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"mlm": ROOT / "scripts" / "pretrain_mlm.py", "clm": ROOT / "scripts" / "pretrain_clm.py"}

#: the recipe before the study, spelled out so the study does not move when configs/mlm.yaml does
BASE = [
    "--model.architecture=bert", "--model.hidden_size=256", "--model.num_layers=4", "--model.num_heads=4",
    "--model.intermediate_size=1024", "--model.dropout=0.1", "--mlm.mask_prob=0.15", "--train.lr=1e-3",
    "--data.block_size=128", "--train.batch_size=32",
]

#: the causal-LM recipe before the study (configs/clm.yaml as it stood)
BASE_CLM = [
    "--model.hidden_size=256", "--model.num_layers=4", "--model.num_heads=4", "--model.intermediate_size=1024",
    "--model.dropout=0.1", "--train.lr=1e-3", "--data.block_size=128", "--train.batch_size=32",
]
#: variants that change only what a causal LM has too
CLM_VARIANTS = ("base", "dropout0", "lr5e-4", "lr2e-3", "lr4e-3", "decay_to_0", "block64", "batch16", "batch64", "combined_clm")

#: variant -> overrides on top of BASE (later flags win)
VARIANTS: dict[str, list[str]] = {
    "base": [],
    "modernbert": ["--model.architecture=modernbert", "--model.intermediate_size=640"],  # GeGLU: 3 matrices of 640 ~ 2 of 1024
    "roberta-prelayernorm": ["--model.architecture=roberta-prelayernorm"],
    "mask30": ["--mlm.mask_prob=0.3"],
    "mask40": ["--mlm.mask_prob=0.4"],
    "dropout0": ["--model.dropout=0"],
    "lr5e-4": ["--train.lr=5e-4"],
    "lr2e-3": ["--train.lr=2e-3"],
    "lr4e-3": ["--train.lr=4e-3"],
    "decay_to_0": ["--train.min_lr_ratio=0"],
    "block64": ["--data.block_size=64", "--train.batch_size=64"],
    "batch16": ["--train.batch_size=16"],
    "batch64": ["--train.batch_size=64"],
    "wide2x384": ["--model.num_layers=2", "--model.hidden_size=384", "--model.num_heads=6", "--model.intermediate_size=1536"],
    "deep8x192": ["--model.num_layers=8", "--model.hidden_size=192", "--model.num_heads=3", "--model.intermediate_size=768"],
}


def combined(*names: str) -> list[str]:
    """The overrides of several variants, in order."""
    return [flag for name in names for flag in VARIANTS[name]]


VARIANTS["combined_prenorm"] = combined("roberta-prelayernorm", "mask30", "dropout0", "lr2e-3")
VARIANTS["combined_modernbert"] = combined("modernbert", "mask30", "dropout0", "lr2e-3")
VARIANTS["combined_clm"] = combined("dropout0", "lr2e-3", "block64")

#: the study's second round: changes on top of the best combination of the first (run by default after VARIANTS)
FOLLOW_UPS = (
    "combined_modernbert+block64", "combined_modernbert+lr4e-3", "combined_modernbert+mask40",
    "combined_modernbert+mask40+batch16", "combined_modernbert+mask40+deep8x192",
)

#: what each variant changes, in words (the README's study table shows them)
DESCRIPTIONS = {
    "base": "post-LN BERT (hidden 256, 4 layers), 15% masking, dropout 0.1, peak lr 1e-3, 32 x 128",
    "modernbert": "ModernBERT (GeGLU width 640, about the same compute)",
    "roberta-prelayernorm": "RoBERTa-PreLayerNorm (pre-LN)",
    "mask30": "30% masking", "mask40": "40% masking", "dropout0": "no dropout",
    "lr5e-4": "peak lr 5e-4", "lr2e-3": "peak lr 2e-3", "lr4e-3": "peak lr 4e-3",
    "decay_to_0": "the cosine decaying to 0 (not to 10% of the peak)",
    "block64": "blocks of 64 (64 rows: the same tokens per step)",
    "batch16": "batches of 16 (twice the steps)", "batch64": "batches of 64 (half the steps)",
    "wide2x384": "2 layers of 384", "deep8x192": "8 layers of 192 (the same compute per token)",
    "combined_prenorm": "RoBERTa-PreLayerNorm, 30% masking, no dropout, peak lr 2e-3",
    "combined_modernbert": "ModernBERT, 30% masking, no dropout, peak lr 2e-3",
    "combined_clm": "no dropout, peak lr 2e-3, blocks of 64",
}


def describe(name: str) -> str:
    """``name``'s changes in words; "a+b" reads "a's; then b's"."""
    return "; then ".join(DESCRIPTIONS[part] for part in name.split("+"))


def variant_overrides(name: str) -> list[str]:
    """The overrides of ``name``; "a+b" applies variant a, then b (e.g. ``combined_modernbert+mask40``)."""
    return combined(*name.split("+"))


def steps_for(tokens: int, overrides: list[str]) -> int:
    """Optimizer steps that train on ``tokens`` tokens with the variant's batch and block length."""
    batch, block = int(_value(overrides, "train.batch_size")), int(_value(overrides, "data.block_size"))
    return max(1, round(tokens / (batch * block)))


def _value(overrides: list[str], key: str) -> str:
    return [flag.split("=", 1)[1] for flag in overrides if flag.startswith(f"--{key}=")][-1]


def run_variant(name: str, seed: int, args, tokenizer: Path) -> dict:
    """Train one variant with one seed; its final evaluation and wall time."""
    overrides = (BASE_CLM if args.clm else BASE) + variant_overrides(name)
    steps = steps_for(args.tokens, overrides)
    out = args.out / name / f"seed{seed}"
    command = [
        sys.executable, str(SCRIPTS[objective(args)]), *overrides, f"--tokenizer.path={tokenizer}", f"--train.output_dir={out}",
        f"--train.max_steps={steps}", f"--train.warmup_steps={max(1, steps // 10)}", f"--train.seed={seed}",
        f"--train.eval_every={steps}", f"--train.save_every={steps}", f"--train.log_every={max(1, steps // 10)}",
    ] + ([f"--train.cpu_threads={args.threads}"] if args.threads else [])
    shutil.rmtree(out, ignore_errors=True)  # a fresh run each time
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - started
    evaluation = [record for record in _records(out / "metrics.jsonl") if "eval_top1_accuracy" in record][-1]
    result = {
        "variant": name, "seed": seed, "steps": steps, "seconds": round(seconds, 1),
        "top1": 100 * evaluation["eval_top1_accuracy"], "top5": 100 * evaluation["eval_top5_accuracy"],
        "baseline_top1": 100 * evaluation["eval_baseline_top1_accuracy"], "eval_loss": evaluation["eval_loss"],
    }
    print(f"{name:22s} seed {seed}  top-1 {result['top1']:6.2f}  top-5 {result['top5']:6.2f}  "
          f"baseline {result['baseline_top1']:5.2f}  loss {result['eval_loss']:.3f}  {seconds:6.0f} s", flush=True)
    return result


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def objective(args) -> str:
    return "clm" if args.clm else "mlm"


def shared_tokenizer(out: Path, script: Path) -> Path:
    """Train the default recipe's tokenizer once (a 1-step run of ``script``) and return its folder."""
    folder = out / "_tokenizer"
    if not (folder / "tokenizer" / "tokenizer_config.json").is_file():
        shutil.rmtree(folder, ignore_errors=True)
        subprocess.run(
            [sys.executable, str(script), f"--train.output_dir={folder}", "--train.max_steps=1",
             "--model.num_layers=1", "--model.hidden_size=32", "--model.num_heads=1", "--model.intermediate_size=32"],
            check=True, capture_output=True, text=True, cwd=ROOT,
        )
    return folder / "tokenizer"


def summarise(results: list[dict]) -> dict[str, dict]:
    """Per variant: mean and standard deviation (over seeds) of top-1 accuracy, its ratio to the baseline, time."""
    summary = {}
    for name in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == name]
        top1 = [r["top1"] for r in runs]
        summary[name] = {
            "top1": round(statistics.mean(top1), 2),
            "top1_std": round(statistics.stdev(top1), 2) if len(top1) > 1 else None,
            "top5": round(statistics.mean(r["top5"] for r in runs), 2),
            "baseline_top1": round(statistics.mean(r["baseline_top1"] for r in runs), 2),
            "ratio_to_baseline": round(statistics.mean(r["top1"] / r["baseline_top1"] for r in runs), 2),
            "eval_loss": round(statistics.mean(r["eval_loss"] for r in runs), 3),
            "seconds": round(statistics.mean(r["seconds"] for r in runs), 1),
            "steps": runs[0]["steps"], "seeds": len(runs), "description": describe(name),
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=None, help="comma-separated, a+b combines (default: all): " + ", ".join(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--tokens", type=int, default=160 * 32 * 128, help="training tokens per run (default: 160 steps of 32 x 128)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time (2: one torch thread each; times then do not compare)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per run (default: cores / jobs)")
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/bench_mlm_budget/{mlm,clm}")
    parser.add_argument("--quick", action="store_true", help="smoke run: base, modernbert, roberta-prelayernorm for 20 steps")
    parser.add_argument("--clm", action="store_true", help="the causal-LM recipe (scripts/pretrain_clm.py) instead")
    args = parser.parse_args()
    args.out = args.out or ROOT / "outputs" / "bench_mlm_budget" / objective(args)
    known = CLM_VARIANTS if args.clm else VARIANTS
    names = args.variants.split(",") if args.variants else list(known) + ([] if args.clm else list(FOLLOW_UPS))
    if args.quick:
        names, args.tokens = (["base"] if args.clm else ["base", "modernbert", "roberta-prelayernorm"]), 20 * 32 * 128
    unknown = [name for name in names if any(part not in known for part in name.split("+"))]
    if unknown:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(known)}")
    if args.jobs > 1 and args.threads is None:
        args.threads = 1
    tokenizer = shared_tokenizer(args.out, SCRIPTS[objective(args)])
    ledger = RunLedger(args.out / "runs.jsonl", fingerprint(run_arguments(args), ["mlm_budget.py"]))
    runs = [(name, seed) for name in names for seed in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda run: ledger.run(*run, lambda: [run_variant(*run, args, tokenizer)])[0], runs))
    if ledger.reused:
        print(f"read back from {ledger.path} (same code, arguments and CPU): {', '.join(ledger.reused)}", flush=True)
    summary = summarise(results)
    print(json.dumps({"benchmark": "mlm_budget", "objective": objective(args), "tokens_per_run": args.tokens, "jobs": args.jobs,
                      "reused_runs": ledger.reused, "variants": summary}))


def run_arguments(args) -> dict:
    """What a run's figures depend on (not the output folder, the number of parallel jobs or the variant list)."""
    return {"tokens": args.tokens, "threads": args.threads, "clm": args.clm, "jobs_share_cores": args.jobs > 1}


if __name__ == "__main__":
    main()
