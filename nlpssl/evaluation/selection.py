"""Keep the best model by a validation metric, as an evaluator for the training loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from nlpssl.objectives.base import Objective


class KeepBest:
    """Evaluator: compute metrics, and export the objective to ``directory`` when ``key`` improves.

    Args:
        compute: objective -> dict of metrics (e.g. STS-B dev Spearman).
        key: the metric to select on; ``higher_is_better`` says which way.
        directory: where the best model (and ``tokenizer``) is written, with ``best.json``.

    Example::

        keep = KeepBest(lambda o: {"stsb_dev": dev_spearman(o)}, "stsb_dev", Path("out/best"), tokenizer)
        train(objective, data, collate, cfg, evaluators=[keep])
    """

    def __init__(
        self, compute: Callable[[Objective], dict], key: str, directory: Path, tokenizer=None, higher_is_better: bool = True
    ) -> None:
        self.compute, self.key, self.directory, self.tokenizer = compute, key, Path(directory), tokenizer
        self.sign = 1.0 if higher_is_better else -1.0
        self.best: float | None = None

    def __call__(self, objective: Objective) -> dict:
        metrics = self.compute(objective)
        value = metrics[self.key]
        if self.best is None or self.sign * value > self.sign * self.best:
            self.best = value
            objective.export(self.directory)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(self.directory)
            (self.directory / "best.json").write_text(json.dumps({self.key: value}))
        return metrics | {f"best_{self.key}": self.best}
