"""Evaluate a text encoder on STS: Spearman x100 of cosine vs gold (SimCSE's protocol).

    python scripts/evaluate_sts.py outputs/simcse/final --pooling cls
    python scripts/evaluate_sts.py MODEL_DIR --tasks stsb_dev stsb_test
    python scripts/evaluate_sts.py MODEL_DIR --pairs my_pairs.tsv --sentence1-column q --sentence2-column d --score-column label

Prints a table, then as its last line one JSON object: stsb_dev, stsb_test,
sts12..sts16, sickr and avg (the mean of STS12-16, STS-B test and SICK-R),
or {"pairs": ...} for --pairs. Where the data folder has wikitext2/, also
longtext_test: the long-text check (same-article paragraph retrieval, MRR x100,
on WikiText-2 test; ``nlpssl.evaluation.long_text``); --no-long-text skips it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from nlpssl.data.sts import STS_TASKS, default_data_dir, read_scored_pairs
from nlpssl.errors import exit_on_user_error
from nlpssl.evaluation.long_text import evaluate_long_text
from nlpssl.evaluation.sts import evaluate_sts, format_results, load_encoder, score_pairs
from nlpssl.models.sentence_folder import folder_pooling


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", help="a folder AutoModel and AutoTokenizer load (sentence-transformers folders too)")
    parser.add_argument("--pooling", choices=("auto", "mean", "cls", "pooler"), default="auto",
                        help="auto: the folder's sentence-transformers pooling if it has one, else mean")
    parser.add_argument("--data-dir", default=None, help="benchmark folder (default: $NLPSSL_SHARED_DATA or <repo>/../shared/data)")
    parser.add_argument("--tasks", nargs="+", default=list(STS_TASKS), metavar="TASK", help=f"any of: {' '.join(STS_TASKS)}")
    parser.add_argument("--pairs", default=None, help="evaluate this csv/tsv of scored pairs instead of the benchmarks")
    column_help = "a header name, or a 0-based index for a file without a header"
    parser.add_argument("--sentence1-column", default="sentence1", help=column_help)
    parser.add_argument("--sentence2-column", default="sentence2", help=column_help)
    parser.add_argument("--score-column", default="score", help=column_help)
    parser.add_argument("--score-range", nargs=2, type=float, default=None, metavar=("LOW", "HIGH"))
    parser.add_argument("--no-long-text", action="store_true", help="skip the WikiText-2 long-text check")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    return parser.parse_args(argv)


@exit_on_user_error
def main(argv: list[str]) -> None:
    args = parse_args(argv)
    model, tokenizer = load_encoder(args.model_dir)
    pooling = (folder_pooling(args.model_dir) or "mean") if args.pooling == "auto" else args.pooling
    encode_kwargs = {"batch_size": args.batch_size, "max_length": args.max_length}
    started = time.perf_counter()
    if args.pairs:
        columns = [int(c) if c.isdigit() else c for c in (args.sentence1_column, args.sentence2_column, args.score_column)]
        pairs = read_scored_pairs(args.pairs, *columns, score_range=args.score_range)
        results = {"pairs": score_pairs(model, tokenizer, pairs, pooling, **encode_kwargs)}
    else:
        data_dir = args.data_dir or default_data_dir()
        results = evaluate_sts(model, tokenizer, data_dir, pooling, tasks=args.tasks, **encode_kwargs)
        if not args.no_long_text and (Path(data_dir) / "wikitext2").is_dir():
            results["longtext_test"] = evaluate_long_text(model, tokenizer, Path(data_dir) / "wikitext2", "test", pooling)["mrr"]
    print(f"{args.model_dir} (pooling {pooling}, {time.perf_counter() - started:.0f}s)")
    print(format_results(results))
    print(json.dumps({task: None if value is None else round(value, 2) for task, value in results.items()}))


if __name__ == "__main__":
    main(sys.argv[1:])
