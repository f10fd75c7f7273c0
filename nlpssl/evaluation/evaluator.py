"""The evaluator contract of the training loop: metrics at each evaluation, plus optional hooks.

The loop calls every evaluator on the unwrapped objective at each evaluation
(on the main process; under DeepSpeed ZeRO-3, whose forward passes are
collectives, on every process, the main process's results counting) and logs
the dict it returns; after that it asks
:meth:`Evaluator.pending_export` (a folder to export the model into: the loop
gathers the weights from every process, which FSDP and ZeRO-3 need, writes the
folder, then calls :meth:`Evaluator.on_exported`) and :attr:`Evaluator.should_stop`
(early stopping); on a resume it calls :meth:`Evaluator.on_resume` once before
the first step. Subclasses override only what they use.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from nlpssl.objectives.base import Objective


class Evaluator:
    """Base class of training-loop evaluators: ``__call__(objective) -> dict``; ``should_stop``; ``on_resume``.

    Implementations: :class:`~nlpssl.evaluation.selection.KeepBest` (best model,
    early stopping, resume), :class:`~nlpssl.evaluation.vision.KNNMonitor`,
    :class:`~nlpssl.evaluation.generation.TextSample`,
    :class:`~nlpssl.evaluation.classification.ValidationScores`; a plain function
    becomes one with :func:`as_evaluator`.

    Example::

        class Perplexity(Evaluator):
            def __call__(self, objective):
                return {"ppl": compute_perplexity(objective)}
    """

    def __call__(self, objective: Objective) -> dict:
        """Metrics of ``objective`` to log at this evaluation (on the main process; see the module docstring)."""
        raise NotImplementedError

    @property
    def should_stop(self) -> bool:
        """True asks the loop to end training after this evaluation (early stopping); default False."""
        return False

    def on_resume(self, step: int) -> None:
        """Called once, before training continues from a checkpoint at optimizer step ``step``; default: nothing."""

    def pending_export(self) -> Path | None:
        """After a call: a folder the loop should now export the objective into (``objective.export``), or None (default)."""
        return None

    def on_exported(self, folder: Path) -> None:
        """Called on the main process once the loop has written the objective into ``folder``; default: nothing."""


class FunctionEvaluator(Evaluator):
    """An :class:`Evaluator` that calls a plain ``objective -> dict`` function and has no hooks."""

    def __init__(self, compute: Callable[[Objective], dict]) -> None:
        self.compute = compute

    def __call__(self, objective: Objective) -> dict:
        return self.compute(objective)


def as_evaluator(evaluator: Evaluator | Callable[[Objective], dict]) -> Evaluator:
    """``evaluator`` itself if it is an :class:`Evaluator`, else a :class:`FunctionEvaluator` around the function.

    Lets the loop call the hooks unconditionally while still taking plain functions.

    Example::

        evaluators = [as_evaluator(e) for e in evaluators]
        stop = any(e.should_stop for e in evaluators)
    """
    return evaluator if isinstance(evaluator, Evaluator) else FunctionEvaluator(evaluator)
