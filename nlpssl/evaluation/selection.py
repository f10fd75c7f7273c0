"""Keep the best model by a validation metric, as an evaluator for the training loop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from nlpssl.evaluation.evaluator import Evaluator
from nlpssl.objectives.base import Objective


class KeepBest(Evaluator):
    """Evaluator: compute metrics, and have the objective exported to ``directory`` when ``key`` improves.

    The training loop writes the export (:meth:`pending_export`), from weights
    gathered on every process, into ``best.tmp``; this adds the tokenizer and
    ``best.json`` there (:meth:`on_exported`), and the loop renames the folder to
    ``best`` when all is written: a kill mid-write leaves the previous ``best/`` whole,
    and ``best.json`` never names a model that is not there.

    Args:
        compute: objective -> dict of metrics (e.g. STS-B dev Spearman).
        key: the metric to select on; ``higher_is_better`` says which way.
        directory: where the best model (and ``tokenizer``) is written, with ``best.json``.
        patience: early stopping: after this many evaluations in a row without
            improvement, :attr:`should_stop` turns true and the training loop stops.

    Example::

        keep = KeepBest(lambda o: {"stsb_dev": dev_spearman(o)}, "stsb_dev", Path("out/best"), tokenizer)
        train(objective, data, collate, cfg, evaluators=[keep])
    """

    def __init__(
        self, compute: Callable[[Objective], dict], key: str, directory: Path, tokenizer=None,
        higher_is_better: bool = True, patience: int | None = None,
    ) -> None:
        self.compute, self.key, self.directory, self.tokenizer = compute, key, Path(directory), tokenizer
        self.sign = 1.0 if higher_is_better else -1.0
        self.patience = patience
        self.best: float | None = None
        self.evaluations_since_best = 0
        self.improved = False  # the last call set a new best, not exported yet

    def on_resume(self, step: int) -> None:
        """Take up the best value the interrupted run recorded (resume replays the same run exactly).

        The patience count starts again from zero.
        """
        record = self.directory / "best.json"
        if record.is_file():
            self.best = json.loads(record.read_text()).get(self.key)

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` evaluations in a row brought no improvement."""
        return self.patience is not None and self.evaluations_since_best >= self.patience

    def __call__(self, objective: Objective) -> dict:
        metrics = self.compute(objective)
        if self.key not in metrics:
            raise KeyError(f"selection metric {self.key!r} is not among the computed ones: {', '.join(metrics)}")
        value = metrics[self.key]
        if self.best is None or self.sign * value > self.sign * self.best:
            self.best, self.evaluations_since_best, self.improved = value, 0, True
        else:
            self.evaluations_since_best += 1
        return metrics | {f"best_{self.key}": self.best}

    def pending_export(self) -> Path | None:
        """``directory`` after a call that set a new best (the loop then exports the objective there)."""
        return self.directory if self.improved else None

    def on_exported(self, folder: Path) -> None:
        """The model is in ``folder`` (the export's temporary folder): add the tokenizer and record the value in ``best.json``."""
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(folder)
        (Path(folder) / "best.json").write_text(json.dumps({self.key: self.best}))
        self.improved = False
