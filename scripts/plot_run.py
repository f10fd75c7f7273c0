"""Plot a run's curves (loss, learning rate, throughput, every evaluation metric) against step.

    python scripts/plot_run.py outputs/mlm                          # outputs/mlm/curves.png, also while it trains
    python scripts/plot_run.py outputs/mlm runs/mlm_lr1e-3 -o compare.png   # several runs overlaid

Reads each run's metrics.jsonl; prints the path of the picture.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from nlpssl.errors import UserError, exit_on_user_error
from nlpssl.evaluation.plots import plot_runs


@exit_on_user_error
def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run folders (output_dir), each holding metrics.jsonl")
    parser.add_argument("-o", "--output", default=None, help="picture path (default: RUN/curves.png for one run, curves.png for several)")
    args = parser.parse_args(argv)
    missing = [run for run in args.runs if not (Path(run) / "metrics.jsonl").is_file()]
    if missing:
        raise UserError(f"{missing[0]} holds no metrics.jsonl; pass a run's output_dir")
    output = args.output or (Path(args.runs[0]) / "curves.png" if len(args.runs) == 1 else Path("curves.png"))
    written = plot_runs(args.runs, output)
    if written is None:
        raise UserError("the runs have logged nothing yet; try again after the first log step")
    print(written)


if __name__ == "__main__":
    main(sys.argv[1:])
